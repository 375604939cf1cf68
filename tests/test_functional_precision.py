"""fp16/bf16 logits under a loss scale: the gradient handed back must be the
upstream gradient times the local gradient, formed in fp32 and cast once, as
fairseq's stock criterion does (its log-softmax runs in fp32). Checked against
the float64 reference, scaled, then cast to the input dtype."""
import pytest
import torch

from tests.helpers import impls
from tests.helpers.precision import OPTS, _logits, _size, check_cast_once, expected_gradient
from wce_fairseq.functional import encouraging_loss

@pytest.mark.parametrize("impl", impls.CONCRETE)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("upstream", [1.0, 2.0**10, 2.0**16])
@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_low_precision_gradient_is_cast_once(impl, dtype, upstream, reduction):
    N, V = _size(impl)
    z, t = _logits(N, V, dtype)
    zin = z.to(dtype)
    if reduction == "none":  # a different factor per token
        up = upstream * torch.linspace(0.5, 1.5, N, dtype=torch.float64)
    else:
        up = torch.tensor(upstream, dtype=torch.float64)
    x = zin.clone().requires_grad_(True)
    loss = encouraging_loss(x, t, reduction=reduction, impl=impl, **OPTS)
    loss.backward(up.to(loss.dtype))
    assert x.grad.dtype == dtype
    check_cast_once(x.grad, *expected_gradient(z, t, reduction, up), dtype)
