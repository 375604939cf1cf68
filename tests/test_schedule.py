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


def _unused_message(flag, given, rule):
    name = flag.lstrip("-").replace("-", "_")
    return (f"{flag} ({name}) {rule}; got {given}, where it would have no effect. Drop {flag} or change the option "
            "it depends on.")


LENGTH = "--bonus-schedule-length (bonus_schedule_length) must be a number > 0 with --bonus-schedule {}; got {!r}"
RATIO = "--bonus-schedule-exp-ratio (bonus_schedule_exp_ratio) must be a finite number > 0; got {!r}"
ONLY_WITH_A_SCHEDULE = "applies only with a bonus schedule"


@pytest.mark.parametrize("kw, message", [
    (dict(kind="linear"), LENGTH.format("linear", None)),
    (dict(kind="cos", length=0), LENGTH.format("cos", 0)),
    (dict(kind="cos", length=-3.0), LENGTH.format("cos", -3.0)),
    (dict(kind="cos", length=math.inf), LENGTH.format("cos", math.inf)),
    (dict(kind="cos", length=math.nan), LENGTH.format("cos", math.nan)),
    (dict(kind="exp", length="5"), LENGTH.format("exp", "5")),
    (dict(kind="exp", length=True), LENGTH.format("exp", True)),
    (dict(kind="exp", length=5, exp_ratio=0.0), RATIO.format(0.0)),
    (dict(kind="exp", length=5, exp_ratio=-1.0), RATIO.format(-1.0)),
    (dict(kind="exp", length=5, exp_ratio=math.inf), RATIO.format(math.inf)),
    (dict(kind="exp", length=5, exp_ratio="3"), RATIO.format("3")),
    (dict(kind="exp", length=5, exp_ratio=True), RATIO.format(True)),
    (dict(length=5), _unused_message("--bonus-schedule-length", "--bonus-schedule constant", ONLY_WITH_A_SCHEDULE)),
    (dict(unit="epoch"), _unused_message("--bonus-schedule-unit", "--bonus-schedule constant", ONLY_WITH_A_SCHEDULE)),
    (dict(kind="linear", length=5, exp_ratio=2.0),
     _unused_message("--bonus-schedule-exp-ratio", "--bonus-schedule linear", "applies only with --bonus-schedule exp")),
    (dict(kind="square"), "--bonus-schedule (bonus_schedule) must be one of ('constant', 'linear', 'exp', 'cos'); "
                          "got 'square'"),
    (dict(kind="linear", length=5, unit="step"),
     "--bonus-schedule-unit (bonus_schedule_unit) must be one of ('epoch', 'update'); got 'step'"),
])
def test_refusals_name_the_flag_and_the_range(kw, message):
    with pytest.raises(ELConfigError) as e:
        BonusSchedule(**kw)
    assert str(e.value) == message


@pytest.mark.parametrize("kw", [dict(kind="exp", length=5, exp_ratio=0.5), dict(kind="exp", length=0.5, exp_ratio=1e-3),
                                dict(kind="linear", length=1), dict(kind="cos", unit="epoch", length=2)])
def test_values_just_inside_the_ranges_are_taken(kw):
    s = BonusSchedule(**kw)
    assert (s.kind, s.length) == (kw["kind"], kw["length"])


def test_a_schedule_needs_a_bonus():
    with pytest.raises(ELConfigError) as e:
        BonusSchedule("linear", length=5).check_applies_to(BonusSpec(bonus="none"))
    assert str(e.value) == _unused_message("--bonus-schedule", "--bonus none",
                                           "applies only with a bonus (--bonus log, power or cos)")
    BonusSchedule("linear", length=5).check_applies_to(BonusSpec(bonus_weight=0.0))  # a baseline run: fine
    BonusSchedule().check_applies_to(BonusSpec(bonus="none"))  # no schedule, no bonus: fine
