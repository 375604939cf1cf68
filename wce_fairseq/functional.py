"""Plain-PyTorch API of the encouraging loss (docs/design.md §4). Imports no fairseq.

    >>> from wce_fairseq.functional import encouraging_loss
    >>> loss = encouraging_loss(logits, target, label_smoothing=0.1, log_end=0.5)

``logits`` is ``[..., V]`` of any float dtype (the math runs in fp32, the
returned loss is fp32 — fp64 for fp64 input with ``impl="reference"``);
``target`` is ``[...]`` of class ids, ``ignore_index`` entries contribute
nothing. ``reduction="mean"`` divides by the number of non-ignored tokens and
returns 0 (not NaN) when there are none.
"""
from __future__ import annotations

import importlib.util
import os

import torch

from .ops.bonus import BonusSpec, ELConfigError
from .ops.chunked import chunked_forward
from .ops.common import STAT_NAMES, ELResult, check_inputs
from .ops.reference import reference_forward

__all__ = ["encouraging_loss", "encouraging_loss_parts", "IMPLEMENTATIONS", "STAT_NAMES", "resolve_impl"]


def _triton_interpreted() -> bool:
    """True when Triton kernels run on the CPU: ``TRITON_INTERPRET=1`` *and* a
    Triton that has the CPU interpreter (older ones, e.g. the 2.0 that torch
    2.0 brings, have none and would look for a GPU driver instead)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return False
    try:
        return importlib.util.find_spec("triton.runtime.interpreter") is not None
    except ImportError:
        return False


def _triton_runnable() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available() or _triton_interpreted()


_HAS_TRITON = _triton_runnable()

#: Every ``impl`` that can run on this machine.
IMPLEMENTATIONS = ("auto", "reference", "chunked") + (("triton",) if _HAS_TRITON else ())


def resolve_impl(impl: str, device: torch.device | str | None = None) -> str:
    """The concrete implementation for ``impl`` on ``device``; raises a clear
    error for an unknown name or one this machine cannot run."""
    known = ("auto", "reference", "chunked", "triton")
    if impl not in known:
        raise ELConfigError(f"--el-impl (impl) must be one of {known}; got {impl!r}")
    if impl not in IMPLEMENTATIONS:
        raise ELConfigError(
            f"--el-impl (impl) {impl!r} cannot run on this machine: it needs the triton package and a CUDA "
            f"device (or TRITON_INTERPRET=1 with a Triton that has the CPU interpreter, for testing); "
            f"available here: {IMPLEMENTATIONS}"
        )
    dev = torch.device(device) if device is not None else None
    if impl == "auto":
        return "triton" if (_HAS_TRITON and dev is not None and dev.type == "cuda") else "chunked"
    if impl == "triton" and dev is not None and dev.type != "cuda" and not _triton_interpreted():
        raise ELConfigError("--el-impl (impl) 'triton' needs CUDA tensors (or TRITON_INTERPRET=1)")
    return impl


def encouraging_loss_parts(
    logits: torch.Tensor,
    target: torch.Tensor,
    spec: BonusSpec,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    impl: str = "auto",
    want_stats: bool = False,
    **impl_options,
) -> ELResult:
    """Loss, nll, weighted bonus and (optionally) diagnostics, for callers such
    as the fairseq criterion that need more than the loss."""
    check_inputs(logits, target, reduction)
    name = resolve_impl(impl, logits.device)
    if name == "reference":
        return reference_forward(logits, target, spec, ignore_index, reduction, want_stats)
    if name == "chunked":
        return chunked_forward(logits, target, spec, ignore_index, reduction, want_stats, **impl_options)
    from .ops.triton_el import triton_forward

    return triton_forward(logits, target, spec, ignore_index, reduction, want_stats, **impl_options)


def encouraging_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    log_end: float = 0.5,
    bonus: str = "log",
    bonus_weight: float = 1.0,
    bonus_gamma: float | None = None,
    bonus_start: float = 0.0,
    bonus_smoothing: float | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    impl: str = "auto",
) -> torch.Tensor:
    """The encouraging loss of docs/design.md §2:
    ``Σ_v q_v (−log p_v) + ρ Σ_v q'_v B(p_v)`` per non-ignored token."""
    spec = BonusSpec(
        label_smoothing=label_smoothing,
        log_end=log_end,
        bonus=bonus,
        bonus_weight=bonus_weight,
        bonus_gamma=bonus_gamma,
        bonus_start=bonus_start,
        bonus_smoothing=bonus_smoothing,
    )
    return encouraging_loss_parts(
        logits, target, spec, ignore_index=ignore_index, reduction=reduction, impl=impl
    ).loss
