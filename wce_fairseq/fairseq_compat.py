"""Small, targeted fixes that let fairseq releases users already have run with
the torch they have. Each one is applied only where its problem exists.

fairseq 0.12.2 with torch >= 1.13: a model loaded from a checkpoint cannot
translate. Loading a ``TransformerEncoderLayerBase`` sets ``load_to_BT``,
which sends inference through ``torch._transformer_encoder_layer_fwd`` with
the argument list of torch 1.12; torch 1.13 added a ``mask_type`` argument, so
``fairseq-generate`` and ``fairseq-interactive`` stop with "Mask Type should be
defined" for every Transformer (fairseq issue 4858). ``load_to_BT`` is the
only switch into that path, so we turn it back off after loading: inference
then takes fairseq's ordinary encoder layer, the same computation.

fairseq's adaptive softmax cannot be trained (any fairseq version with this
code): ``AdaptiveSoftmax.get_log_prob`` adds each tail cluster's prior *in
place* to the output of its ``LogSoftmax``, which that op's backward needs, so
every backward stops with "one of the variables needed for gradient
computation has been modified by an inplace operation". Its ``lsm`` module is
replaced by one that hands back a copy of the log-softmax: the in-place add
then changes the copy, values are unchanged, and the backward is exact.
"""
from __future__ import annotations

import torch


def torch_version() -> tuple:
    parts = []
    for piece in torch.__version__.split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _encoder_layer_class():
    try:
        from fairseq.modules.transformer_layer import TransformerEncoderLayerBase
    except ImportError:  # pragma: no cover - fairseq without that class
        return None
    return TransformerEncoderLayerBase


def needs_bt_fix(cls=None) -> bool:
    """True where loading turns on the torch-1.12-only inference path."""
    cls = cls or _encoder_layer_class()
    if cls is None or torch_version() < (1, 13):
        return False
    method = cls.__dict__.get("_load_from_state_dict")
    code = getattr(getattr(method, "__wrapped__", method), "__code__", None)
    return code is not None and "load_to_BT" in code.co_names


def _wrap_method_once(cls, name, needed, after) -> bool:
    """Run ``after(self)`` after ``cls.name`` (once, where ``needed(cls)``);
    True when the wrapper is in place."""
    if cls is None:
        return False
    inner = cls.__dict__.get(name)
    if getattr(inner, "_wce_fix", False):
        return True
    if not needed(cls):
        return False

    def method(self, *args, **kwargs):
        out = inner(self, *args, **kwargs)
        after(self)
        return out

    method._wce_fix = True
    method.__wrapped__ = inner  # what needed(cls) inspects, once wrapped
    method.__doc__ = inner.__doc__
    setattr(cls, name, method)
    return True


def disable_stale_bt_fastpath(cls=None) -> bool:
    """Apply the fix above (idempotent); True when it is in place."""

    def off(layer):
        layer.load_to_BT = False

    return _wrap_method_once(cls or _encoder_layer_class(), "_load_from_state_dict", needs_bt_fix, off)


class CopyingLogSoftmax(torch.nn.Module):
    """``nn.LogSoftmax`` whose result its caller may change in place: autograd
    keeps the log-softmax it saved, the caller gets a copy."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return torch.log_softmax(x, dim=self.dim).clone()


def _adaptive_softmax_class():
    try:
        from fairseq.modules.adaptive_softmax import AdaptiveSoftmax
    except ImportError:  # pragma: no cover - fairseq without it
        return None
    return AdaptiveSoftmax


def needs_adaptive_softmax_fix(cls=None) -> bool:
    """True where ``get_log_prob`` changes its log-softmax output in place."""
    cls = cls or _adaptive_softmax_class()
    code = getattr(getattr(cls, "get_log_prob", None), "__code__", None)
    return code is not None and "lsm" in code.co_names and "add_" in code.co_names


def make_adaptive_softmax_trainable(cls=None) -> bool:
    """Apply the adaptive-softmax fix above (idempotent); True when it is in place."""

    def copying_lsm(module):
        if isinstance(getattr(module, "lsm", None), torch.nn.LogSoftmax):
            module.lsm = CopyingLogSoftmax(module.lsm.dim)

    return _wrap_method_once(cls or _adaptive_softmax_class(), "__init__", needs_adaptive_softmax_fix, copying_lsm)


def apply_all() -> None:
    disable_stale_bt_fastpath()
    make_adaptive_softmax_trainable()
