"""``nn.Module`` wrapper of :func:`wce_fairseq.functional.encouraging_loss`."""
from __future__ import annotations

import torch
from torch import nn

from .functional import encouraging_loss_parts, resolve_impl
from .ops.bonus import REDUCTIONS, BonusSpec, ELConfigError


class EncouragingLoss(nn.Module):
    """Like ``nn.CrossEntropyLoss``: options at construction, ``(logits, target)`` at call.

    Options are validated here, so a bad value fails when the module is built.
    """

    def __init__(
        self,
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
    ):
        super().__init__()
        self.spec = BonusSpec(label_smoothing, log_end, bonus, bonus_weight, bonus_gamma, bonus_start, bonus_smoothing)
        resolve_impl(impl)
        if reduction not in REDUCTIONS:
            raise ELConfigError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.impl = impl

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return encouraging_loss_parts(
            logits, target, self.spec, ignore_index=self.ignore_index, reduction=self.reduction, impl=self.impl
        ).loss

    def extra_repr(self) -> str:
        s = self.spec
        return (f"bonus={s.bonus}, log_end={s.log_end}, bonus_weight={s.bonus_weight}, "
                f"label_smoothing={s.label_smoothing}, reduction={self.reduction}, impl={self.impl}")
