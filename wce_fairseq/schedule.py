"""Bonus-weight schedules ρ_t = ρ · r(t) (docs/design.md, "Options and schedules"). No fairseq import.

``t`` is the training progress in the chosen unit:

* ``update``: the number of optimizer updates already done (0 for the first);
* ``epoch``:  the number of epochs already finished (0 during fairseq's epoch 1).

Both are pure functions of fairseq's own restored counters, so a run resumed
from ``checkpoint_last.pt`` gets the same ρ_t without any extra saved state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from .ops.bonus import BonusSpec, ELConfigError, _is_real, _unused

SCHEDULES = ("constant", "linear", "exp", "cos")
SCHEDULE_UNITS = ("epoch", "update")
DEFAULT_UNIT = "update"
DEFAULT_EXP_RATIO = 5.0


@dataclass(frozen=True)
class BonusSchedule:
    kind: str = "constant"
    unit: str = DEFAULT_UNIT
    length: Optional[float] = None
    exp_ratio: float = DEFAULT_EXP_RATIO

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ELConfigError(f"--bonus-schedule (bonus_schedule) must be one of {SCHEDULES}; got {self.kind!r}")
        if self.unit not in SCHEDULE_UNITS:
            raise ELConfigError(
                f"--bonus-schedule-unit (bonus_schedule_unit) must be one of {SCHEDULE_UNITS}; got {self.unit!r}"
            )
        if self.kind != "constant":
            if self.length is None or not _is_real(self.length) or not (0 < self.length < math.inf):
                raise ELConfigError(
                    f"--bonus-schedule-length (bonus_schedule_length) must be a number > 0 "
                    f"with --bonus-schedule {self.kind}; got {self.length!r}"
                )
        if not _is_real(self.exp_ratio) or not (0 < self.exp_ratio < math.inf):
            raise ELConfigError(
                f"--bonus-schedule-exp-ratio (bonus_schedule_exp_ratio) must be a finite number > 0; "
                f"got {self.exp_ratio!r}"
            )
        # options that only act with a schedule (or with the exp one)
        if self.kind == "constant":
            if self.length is not None:
                _unused("--bonus-schedule-length", "--bonus-schedule constant", "applies only with a bonus schedule")
            if self.unit != DEFAULT_UNIT:
                _unused("--bonus-schedule-unit", "--bonus-schedule constant", "applies only with a bonus schedule")
        if self.exp_ratio != DEFAULT_EXP_RATIO and self.kind != "exp":
            _unused("--bonus-schedule-exp-ratio", f"--bonus-schedule {self.kind}", "applies only with --bonus-schedule exp")

    def check_applies_to(self, spec: BonusSpec) -> None:
        """A schedule scales the bonus: refuse one where there is none."""
        if self.kind != "constant" and spec.bonus == "none":
            _unused("--bonus-schedule", "--bonus none", "applies only with a bonus (--bonus log, power or cos)")

    def factor(self, t: float) -> float:
        """r(t) in [0, 1]."""
        if self.kind == "constant":
            return 1.0
        u = min(max(float(t), 0.0) / float(self.length), 1.0)
        if self.kind == "linear":
            return u
        if self.kind == "exp":
            return math.exp((u - 1.0) * self.exp_ratio)
        return (math.cos(math.pi * (1.0 + u)) + 1.0) / 2.0  # cos

    def progress(self, epoch: int, num_updates: int) -> float:
        """t from fairseq's 1-based epoch and its update counter."""
        return float(max(epoch - 1, 0)) if self.unit == "epoch" else float(num_updates)
