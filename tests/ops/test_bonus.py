"""ops/bonus.py: the bonus shapes, their derivatives and the option checks."""
import math
import re

import pytest
import torch

from tests.helpers.data import make_inputs
from tests.helpers.reference import el_reference
from wce_fairseq.ops.bonus import BonusSpec, ELConfigError


def test_gradient_formula_of_spec():
    """The closed-form gradient of docs/design.md ("The gradient"), evaluated directly, equals autograd."""
    logits, target = make_inputs((6, 25), torch.float64, 19, ignore=False)
    eps, lam, rho, le = 0.1, 0.2, 1.5, 0.6
    x = logits.clone().requires_grad_()
    loss, _, _ = el_reference(x, target, label_smoothing=eps, bonus_smoothing=lam, bonus_weight=rho, log_end=le)
    loss.sum().backward()
    V = logits.shape[-1]
    p = torch.softmax(logits, -1)
    q = torch.full_like(p, eps / (V - 1)).scatter(1, target[:, None], 1 - eps)
    qb = torch.full_like(p, lam / (V - 1)).scatter(1, target[:, None], 1 - lam)
    dB = torch.where(p <= le, -1 / (1 - p), torch.full_like(p, -1 / (1 - le)))
    S = (qb * p * dB).sum(-1, keepdim=True)
    grad = (p - q) + rho * p * (qb * dB - S)
    torch.testing.assert_close(x.grad, grad)


def test_bonus_curve_is_continuous_and_tangent():
    """B is continuous at LE (tangent continuation) and at the start s."""
    from wce_fairseq.ops.bonus import BonusSpec

    for le in (0.3, 0.5, 0.75):
        spec = BonusSpec(log_end=le, bonus_start=0.1)
        p = torch.tensor([le - 1e-7, le + 1e-7, 0.1 - 1e-9, 0.1], dtype=torch.float64)
        b, d = spec.curve(p, 1 - p)
        assert abs(b[0] - b[1]) < 1e-6 and abs(d[0] - d[1]) < 1e-5
        assert abs(b[2]) < 1e-12 and abs(b[3]) < 1e-12
        assert float(spec.curve(torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0]))[0]) == pytest.approx(
            math.log(1 - le) - 1.0 - math.log(0.9))  # B(1) - B(s), tangent reaches p = 1


@pytest.mark.parametrize("flag, kw", [("--bonus-gamma", dict(bonus_gamma=2.0)),
                                      ("--log-end", dict(bonus="cos", log_end=0.75)),
                                      ("--bonus-start", dict(bonus="none", bonus_start=0.5))])
def test_an_option_without_effect_names_its_flag_and_field(flag, kw):
    with pytest.raises(ELConfigError) as e:
        BonusSpec(**kw)
    field = flag[2:].replace("-", "_")
    assert str(e.value).startswith(f"{flag} ({field}) applies only with ")


@pytest.mark.parametrize("log_end, start", [(0.5, 0.7), (0.75, 0.9), (1.0, 0.999995)])
def test_a_start_on_the_tangent_or_in_the_clamp(log_end, start):
    """The start shift B(p) − B(s) with s past LE (on the tangent), and in the
    LE = 1 clamp (1 − s < 1e-5): continuous at s, equal to the float64
    reference's whole curve shifted."""
    from tests.helpers.reference import bonus_value

    spec = BonusSpec(log_end=log_end, bonus_start=start)
    p = torch.tensor([start, (start + 1) / 2, 1.0 - 1e-7], dtype=torch.float64)
    b, _ = spec.curve(p, 1 - p)
    torch.testing.assert_close(b, bonus_value(p, "log", log_end, None, start), rtol=1e-12, atol=1e-12)
    assert float(b[0]) == 0.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(bonus="cos", bonus_gamma=2.0), "--bonus-gamma (bonus_gamma) applies only with --bonus power; got --bonus cos,"),
    (dict(bonus="power", bonus_gamma=1.0, log_end=0.7), "--log-end (log_end) applies only with --bonus log; got --bonus power,"),
])
def test_an_option_without_effect_is_refused_naming_the_option_it_depends_on(kwargs, message):
    with pytest.raises(ELConfigError, match=re.escape(message)):
        BonusSpec(**kwargs)


NAN, INF = float("nan"), float("inf")
GAMMA = "--bonus-gamma (bonus_gamma) must be a finite number > 0 with --bonus power; got "


@pytest.mark.parametrize("kwargs, message", [
    (dict(label_smoothing=1.0), "--label-smoothing (label_smoothing) must be in [0, 1); got 1.0"),
    (dict(label_smoothing=-0.1), "--label-smoothing (label_smoothing) must be in [0, 1); got -0.1"),
    (dict(label_smoothing=NAN), "--label-smoothing (label_smoothing) must be in [0, 1); got nan"),
    (dict(label_smoothing="0.1"), "--label-smoothing (label_smoothing) must be in [0, 1); got '0.1'"),
    (dict(label_smoothing=True), "--label-smoothing (label_smoothing) must be in [0, 1); got True"),
    (dict(label_smoothing=None), "--label-smoothing (label_smoothing) must be in [0, 1); got None"),
    (dict(bonus="square"), "--bonus (bonus) must be one of ('log', 'power', 'cos', 'none'); got 'square'"),
    (dict(log_end=0.0), "--log-end (log_end) must be in (0, 1]; got 0.0"),
    (dict(log_end=-0.5), "--log-end (log_end) must be in (0, 1]; got -0.5"),
    (dict(log_end=1.5), "--log-end (log_end) must be in (0, 1]; got 1.5"),
    (dict(log_end=NAN), "--log-end (log_end) must be in (0, 1]; got nan"),
    (dict(log_end=None), "--log-end (log_end) must be in (0, 1]; got None"),
    (dict(bonus_weight=-0.1), "--bonus-weight (bonus_weight) must be a finite number >= 0; got -0.1"),
    (dict(bonus_weight=INF), "--bonus-weight (bonus_weight) must be a finite number >= 0; got inf"),
    (dict(bonus_weight=NAN), "--bonus-weight (bonus_weight) must be a finite number >= 0; got nan"),
    (dict(bonus_weight="1"), "--bonus-weight (bonus_weight) must be a finite number >= 0; got '1'"),
    (dict(bonus_start=1.0), "--bonus-start (bonus_start) must be in [0, 1); got 1.0"),
    (dict(bonus_start=-0.1), "--bonus-start (bonus_start) must be in [0, 1); got -0.1"),
    (dict(bonus_start=NAN), "--bonus-start (bonus_start) must be in [0, 1); got nan"),
    (dict(bonus_start=False), "--bonus-start (bonus_start) must be in [0, 1); got False"),
    (dict(bonus_smoothing=1.0),
     "--bonus-smoothing (bonus_smoothing) must be in [0, 1) (or unset: same as --label-smoothing); got 1.0"),
    (dict(bonus_smoothing=-0.1),
     "--bonus-smoothing (bonus_smoothing) must be in [0, 1) (or unset: same as --label-smoothing); got -0.1"),
    (dict(bonus_smoothing=NAN),
     "--bonus-smoothing (bonus_smoothing) must be in [0, 1) (or unset: same as --label-smoothing); got nan"),
    (dict(bonus_smoothing="x"),
     "--bonus-smoothing (bonus_smoothing) must be in [0, 1) (or unset: same as --label-smoothing); got 'x'"),
    (dict(bonus="power"), GAMMA + "None"),
    (dict(bonus="power", bonus_gamma=0.0), GAMMA + "0.0"),
    (dict(bonus="power", bonus_gamma=-1.0), GAMMA + "-1.0"),
    (dict(bonus="power", bonus_gamma=INF), GAMMA + "inf"),
    (dict(bonus="power", bonus_gamma=NAN), GAMMA + "nan"),
    (dict(bonus="power", bonus_gamma=True), GAMMA + "True"),
    (dict(bonus="none", bonus_weight=2.0),
     "--bonus-weight (bonus_weight) applies only with a bonus (--bonus log, power or cos); got --bonus none, "
     "where it would have no effect. Drop --bonus-weight or change the option it depends on."),
    (dict(bonus="none", bonus_start=0.5),
     "--bonus-start (bonus_start) applies only with a bonus (--bonus log, power or cos); got --bonus none, "
     "where it would have no effect. Drop --bonus-start or change the option it depends on."),
    (dict(bonus="none", bonus_smoothing=0.0),
     "--bonus-smoothing (bonus_smoothing) applies only with a bonus (--bonus log, power or cos); got --bonus none, "
     "where it would have no effect. Drop --bonus-smoothing or change the option it depends on."),
    (dict(bonus="none", log_end=1.0),
     "--log-end (log_end) applies only with --bonus log; got --bonus none, "
     "where it would have no effect. Drop --log-end or change the option it depends on."),
    (dict(bonus_gamma=2.0),
     "--bonus-gamma (bonus_gamma) applies only with --bonus power; got --bonus log, "
     "where it would have no effect. Drop --bonus-gamma or change the option it depends on."),
])
def test_an_option_outside_its_range_is_refused_with_the_whole_message(kwargs, message):
    with pytest.raises(ELConfigError) as e:
        BonusSpec(**kwargs)
    assert str(e.value) == message


@pytest.mark.parametrize("kwargs", [
    dict(label_smoothing=0), dict(label_smoothing=0.0), dict(label_smoothing=0.999999),
    dict(log_end=1), dict(log_end=1.0), dict(log_end=1e-9),
    dict(bonus_weight=0), dict(bonus_weight=0.0), dict(bonus_weight=1e300),
    dict(bonus_start=0.0), dict(bonus_start=0.999999),
    dict(bonus_smoothing=0.0), dict(bonus_smoothing=0.999999),
    dict(bonus="power", bonus_gamma=1e-9), dict(bonus="power", bonus_gamma=1e300), dict(bonus="power", bonus_gamma=2),
    dict(bonus="cos", bonus_weight=0.0, bonus_start=0.5, bonus_smoothing=0.2),
    dict(bonus="none", log_end=0.5, bonus_weight=1.0, bonus_start=0.0, bonus_smoothing=None),
])
def test_an_option_at_the_edge_of_its_range_is_kept_as_given(kwargs):
    spec = BonusSpec(**kwargs)
    for name, value in kwargs.items():
        assert getattr(spec, name) == value and type(getattr(spec, name)) is type(value)
