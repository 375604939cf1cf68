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

fairseq with torch >= 2.6: a distributed run cannot resume. Rank 0 reads
``checkpoint_last.pt`` and sends it to the other ranks with
``distributed_utils.broadcast_object``, which pickles it with ``torch.save``
(the configuration by then an omegaconf ``DictConfig``); the receivers
``torch.load`` it with torch's default ``weights_only=True``, which refuses
``DictConfig``, so rank 1 stops in ``trainer.load_checkpoint`` and rank 0 with
"Connection closed by peer". The receiving side is replaced by one that
reads the same two broadcasts (length, then bytes) and unpickles them with
``weights_only=False``: the bytes come from rank 0 of the same job, over its
own process group, after rank 0 read the file with safe loading.

fairseq with numpy >= 2: ``np.compat`` is gone, and fairseq's
``TokenBlockDataset`` (``--task language_modeling --sample-break-mode eos``)
and ``LanguagePairDataset`` (``--num-batch-buckets``) use ``np.compat.long``.
Those two modules get a view of numpy that adds it back (``long`` is
Python's ``int``, what numpy 1 had there); numpy itself is left unchanged.
"""
from __future__ import annotations

import io
import types

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


def _distributed_utils():
    try:
        from fairseq.distributed import utils
    except ImportError:  # pragma: no cover - fairseq without it
        return None
    return utils


def _kwarg_names(code) -> set:
    """Keyword-argument names a function's code passes (kept in its constants)."""
    return {name for const in code.co_consts if isinstance(const, tuple) for name in const if isinstance(name, str)}


def needs_broadcast_fix(module=None) -> bool:
    """True where ranks unpickle broadcast objects with torch's default
    ``torch.load``, and that default is safe loading (torch >= 2.6)."""
    module = module or _distributed_utils()
    fn = getattr(module, "_broadcast_object_slow", None)
    code = getattr(getattr(fn, "__wrapped__", fn), "__code__", None)
    return (code is not None and torch_version() >= (2, 6) and "load" in code.co_names
            and "weights_only" not in _kwarg_names(code))


def _trusting_receiver(send):
    """fairseq's ``_broadcast_object_slow`` with its receiving side reading
    rank ``src_rank``'s pickle without safe loading (see the module's text)."""

    def broadcast_object_slow(obj, src_rank, group, dist_device):
        utils = _distributed_utils()
        if utils.get_rank(group) == src_rank:
            return send(obj, src_rank, group, dist_device)
        length = torch.zeros(1, dtype=torch.long, device=dist_device)
        utils.broadcast(length, src=src_rank, group=group)
        payload = torch.empty(int(length.item()), dtype=torch.uint8, device=dist_device)
        utils.broadcast(payload, src=src_rank, group=group)
        return torch.load(io.BytesIO(payload.cpu().numpy().tobytes()), map_location="cpu", weights_only=False)

    broadcast_object_slow._wce_fix = True
    broadcast_object_slow.__wrapped__ = send
    return broadcast_object_slow


def receive_broadcasts_unsafely_from_rank_0(module=None) -> bool:
    """Apply the broadcast fix above (idempotent); True when it is in place."""
    module = module or _distributed_utils()
    fn = getattr(module, "_broadcast_object_slow", None)
    if getattr(fn, "_wce_fix", False):
        return True
    if not needs_broadcast_fix(module):
        return False
    module._broadcast_object_slow = _trusting_receiver(fn)
    return True


NUMPY_COMPAT_MODULES = ("fairseq.data.token_block_dataset", "fairseq.data.language_pair_dataset")


class _NumpyWithCompat(types.ModuleType):
    """numpy as seen by one fairseq module: numpy itself, plus ``compat.long``."""

    def __init__(self, numpy):
        super().__init__("numpy")
        self._numpy = numpy
        self.compat = types.SimpleNamespace(long=int)

    def __getattr__(self, name):
        return getattr(self._numpy, name)


def needs_numpy_compat_fix(module) -> bool:
    """True where ``module`` uses ``np.compat`` and the numpy it sees has none."""
    np = getattr(module, "np", None)
    if np is None or hasattr(np, "compat"):
        return False
    return any("compat" in getattr(obj, "__code__", types.SimpleNamespace(co_names=())).co_names
               for obj in _functions_of(module))


def _functions_of(module):
    """The functions defined in ``module``, methods (static ones too) included."""
    for obj in vars(module).values():
        if isinstance(obj, type) and obj.__module__ == module.__name__:
            for f in vars(obj).values():
                f = getattr(f, "__func__", f)  # staticmethod, classmethod
                if isinstance(f, types.FunctionType):
                    yield f
        elif isinstance(obj, types.FunctionType) and obj.__module__ == module.__name__:
            yield obj


def give_fairseq_numpy_compat() -> list:
    """Apply the numpy fix above (idempotent); the modules it is in place in."""
    import importlib

    fixed = []
    for name in NUMPY_COMPAT_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # pragma: no cover - fairseq without it
            continue
        if isinstance(module.np, _NumpyWithCompat):
            fixed.append(name)
        elif needs_numpy_compat_fix(module):
            module.np = _NumpyWithCompat(module.np)
            fixed.append(name)
    return fixed


def apply_all() -> None:
    disable_stale_bt_fastpath()
    make_adaptive_softmax_trainable()
    receive_broadcasts_unsafely_from_rank_0()
    give_fairseq_numpy_compat()
