"""ops/fused_linear.py: the output projection and the loss in token chunks,
against the logits path, in low precision, without host syncs."""
import pytest
import torch

from tests.helpers import impls
from tests.helpers.data import SPECS
from tests.helpers.precision import OPTS, check_cast_once, expected_gradient
from tests.helpers.reference import el_reference, reduce
from tests.helpers.sync_counter import SyncCounter
from wce_fairseq.ops.bonus import BonusSpec
from wce_fairseq.ops.fused_linear import fused_linear_encouraging_loss
from wce_fairseq.ops.targets import raise_target_errors



@pytest.mark.parametrize("impl", impls.FUSED)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("upstream", [1.0, 2.0**10, 2.0**16])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_fused_projection_gradients_are_cast_once(impl, dtype, upstream, reduction):
    g = torch.Generator().manual_seed(3)
    N, D, V = 24, 16, 700
    h = (torch.randn(N, D, generator=g, dtype=torch.float64)).to(dtype)
    w = (torch.randn(V, D, generator=g, dtype=torch.float64) * 0.8).to(dtype)
    t = torch.randint(0, V, (N,), generator=g)
    t[5] = -100
    hx, wx = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
    res = fused_linear_encouraging_loss(hx, wx, None, t, BonusSpec(**OPTS), reduction=reduction, impl=impl)
    res.loss.backward(torch.tensor(upstream))
    hr, wr = h.double().requires_grad_(True), w.double().requires_grad_(True)
    ref = reduce(el_reference(hr @ wr.t(), t, **OPTS)[0], t, reduction)
    (ref * upstream).backward()
    # fp32 accumulates h^T G and G W: its error scales with |G|-sized terms times |h|, |W|
    _, terms = expected_gradient(h.double() @ w.double().t(), t, reduction, torch.tensor(upstream, dtype=torch.float64))
    for got, exact, mag in ((hx.grad, hr.grad, terms @ w.double().abs()),
                            (wx.grad, wr.grad, terms.t() @ h.double().abs())):
        assert got.dtype == dtype
        check_cast_once(got, exact, mag, dtype)


@pytest.mark.parametrize("impl", impls.FUSED)
def test_no_host_sync_in_the_fused_projection(monkeypatch, impl):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(20, 8, generator=g, requires_grad=True)
    w = torch.randn(50, 8, generator=g, requires_grad=True)
    b = torch.randn(50, generator=g, requires_grad=True)
    t = torch.randint(0, 50, (20,), generator=g)
    t[::4] = -100
    raise_target_errors(wait=True)
    counter = SyncCounter(monkeypatch)
    res = fused_linear_encouraging_loss(h, w, b, t, SPECS[0], reduction="mean", want_stats=True, chunk_rows=6,
                                        impl=impl, sync_free=True)
    res.loss.backward()
    monkeypatch.undo()
    assert counter.calls == []


@pytest.mark.parametrize("impl", impls.FUSED + ["auto"])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_linear_function_matches_logits_path(bias, impl):
    from wce_fairseq.functional import encouraging_loss_parts
    from wce_fairseq.ops.bonus import BonusSpec
    from wce_fairseq.ops.fused_linear import fused_linear_encouraging_loss

    g = torch.Generator().manual_seed(0)
    N, D, V = 37, 8, 50
    h = torch.randn(N, D, generator=g, requires_grad=True)
    w = torch.randn(V, D, generator=g, requires_grad=True)
    b = torch.randn(V, generator=g, requires_grad=True) if bias else None
    t = torch.randint(0, V, (N,), generator=g)
    t[::5] = -100
    spec = BonusSpec(label_smoothing=0.1, log_end=0.5)
    ref = encouraging_loss_parts(h @ w.t() + (b if bias else 0), t, spec, reduction="mean", impl="reference",
                                 want_stats=True)
    ref.loss.backward()
    grads = [x.grad.clone() for x in (h, w, b) if x is not None]
    for x in (h, w, b):
        if x is not None:
            x.grad = None
    got = fused_linear_encouraging_loss(h, w, b, t, spec, reduction="mean", want_stats=True, chunk_rows=6, impl=impl)
    (got.loss * 3.0).backward()  # non-unit upstream gradient
    torch.testing.assert_close(got.loss.double(), ref.loss.double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.stats, ref.stats, rtol=1e-5, atol=1e-5)
    for x, gr in zip([x for x in (h, w, b) if x is not None], grads):
        torch.testing.assert_close(x.grad, 3.0 * gr, rtol=1e-4, atol=1e-6)
