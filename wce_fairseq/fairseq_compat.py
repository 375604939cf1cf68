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
    code = getattr(cls.__dict__.get("_load_from_state_dict"), "__code__", None)
    return code is not None and "load_to_BT" in code.co_names


def disable_stale_bt_fastpath(cls=None) -> bool:
    """Apply the fix above (idempotent); True when it is in place."""
    cls = cls or _encoder_layer_class()
    if cls is None:
        return False
    load = cls.__dict__.get("_load_from_state_dict")
    if getattr(load, "_wce_no_bt", False):
        return True
    if not needs_bt_fix(cls):
        return False

    def _load_from_state_dict(self, *args, **kwargs):
        load(self, *args, **kwargs)
        self.load_to_BT = False

    _load_from_state_dict._wce_no_bt = True
    _load_from_state_dict.__doc__ = load.__doc__
    cls._load_from_state_dict = _load_from_state_dict
    return True


def apply_all() -> None:
    disable_stale_bt_fastpath()
