"""Plain-PyTorch API of the encouraging loss (docs/design.md, "Interfaces"). Imports no fairseq.

    >>> from wce_fairseq.functional import encouraging_loss
    >>> loss = encouraging_loss(logits, target, label_smoothing=0.1, log_end=0.5)

``logits`` is ``[..., V]`` of any float dtype (the math runs in fp32, the
returned loss is fp32 — fp64 for fp64 input with ``impl="reference"``);
``target`` is ``[...]`` of class ids, ``ignore_index`` entries contribute
nothing. ``reduction="mean"`` divides by the number of non-ignored tokens and
returns 0 (not NaN) when there are none.
"""
from __future__ import annotations

import torch

from .ops.bonus import BonusSpec, ELConfigError  # noqa: F401  (part of the API)
from .ops.common import STAT_NAMES, Diagnostics, ELResult  # noqa: F401
from .ops.dispatch import IMPL_NAMES, IMPLEMENTATIONS, compute, resolve_impl, runnable_impls, self_check

__all__ = ["encouraging_loss", "encouraging_loss_parts", "IMPL_NAMES", "IMPLEMENTATIONS", "STAT_NAMES",
           "Diagnostics", "ELResult", "resolve_impl", "runnable_impls", "self_check"]


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
    """Loss, nll, weighted bonus and (optionally) the diagnostics, for callers
    such as the fairseq criterion that need more than the loss.
    ``impl_options``: see ``ops.function.ImplOptions``."""
    return compute(logits, target, spec, ignore_index=ignore_index, reduction=reduction, impl=impl,
                   want_stats=want_stats, **impl_options)


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
    """The encouraging loss ``Σ_v q_v (−log p_v) + ρ Σ_v q'_v B(p_v)`` per
    non-ignored token (docs/design.md, "The loss")."""
    spec = BonusSpec(label_smoothing=label_smoothing, log_end=log_end, bonus=bonus, bonus_weight=bonus_weight,
                     bonus_gamma=bonus_gamma, bonus_start=bonus_start, bonus_smoothing=bonus_smoothing)
    return compute(logits, target, spec, ignore_index=ignore_index, reduction=reduction, impl=impl).loss
