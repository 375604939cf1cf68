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
