"""ops/bonus.py: the bonus shapes, their derivatives and the option checks."""
import math

import pytest
import torch

from tests.helpers.data import make_inputs
from tests.helpers.reference import el_reference


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
