"""wce_fairseq/schedule.py: r(t) against its closed forms, t from fairseq's counters."""
import math

import pytest

from wce_fairseq.ops.bonus import BonusSpec, ELConfigError
from wce_fairseq.schedule import BonusSchedule


@pytest.mark.parametrize("t", [0, 1, 7, 20, 40, 100])
def test_factors_against_their_formulas(t):
    u = min(t / 20, 1.0)
    assert BonusSchedule().factor(t) == 1.0
    assert BonusSchedule("linear", length=20).factor(t) == pytest.approx(u)
    assert BonusSchedule("exp", length=20, exp_ratio=3.0).factor(t) == pytest.approx(math.exp((u - 1) * 3.0))
    assert BonusSchedule("cos", length=20).factor(t) == pytest.approx((math.cos(math.pi * (1 + u)) + 1) / 2)


def test_t_is_what_is_finished():
    assert BonusSchedule("linear", "update", 10).progress(epoch=3, num_updates=7) == 7
    assert BonusSchedule("linear", "epoch", 10).progress(epoch=3, num_updates=7) == 2  # epochs 1 and 2 done
    assert BonusSchedule("linear", "epoch", 10).progress(epoch=1, num_updates=0) == 0


@pytest.mark.parametrize("kw, flag", [
    (dict(kind="linear"), "--bonus-schedule-length"),
    (dict(kind="cos", length=0), "--bonus-schedule-length"),
    (dict(length=5), "--bonus-schedule-length"),  # without a schedule
    (dict(unit="epoch"), "--bonus-schedule-unit"),
    (dict(kind="linear", length=5, exp_ratio=2.0), "--bonus-schedule-exp-ratio"),
    (dict(kind="square"), "--bonus-schedule"),
])
def test_refusals_name_the_flag(kw, flag):
    with pytest.raises(ELConfigError, match=flag):
        BonusSchedule(**kw)


def test_a_schedule_needs_a_bonus():
    with pytest.raises(ELConfigError, match="--bonus none"):
        BonusSchedule("linear", length=5).check_applies_to(BonusSpec(bonus="none"))
    BonusSchedule("linear", length=5).check_applies_to(BonusSpec(bonus_weight=0.0))  # a baseline run: fine
