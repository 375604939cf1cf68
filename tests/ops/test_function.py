"""The autograd function every fused implementation runs through (ops/function.py).

On a GPU the loss must never make the host wait for the device. The device
code path (``sync_free``, on by default for CUDA tensors) is forced on CPU
tensors here: not one synchronising call from the package over a whole
forward + backward, and the same results as the CPU path."""
import dataclasses

import pytest
import torch

from tests.helpers import impls
from tests.helpers.data import SPEC_IDS, SPECS, confident_rows
from tests.helpers.sync_counter import SyncCounter
from wce_fairseq.functional import encouraging_loss_parts, self_check
from wce_fairseq.ops.chunked import ChunkedKernel
from wce_fairseq.ops.common import prepare_targets
from wce_fairseq.ops.function import ImplOptions, kernel_forward, once_differentiable
from wce_fairseq.ops.targets import raise_target_errors


@pytest.mark.parametrize("impl", impls.FUSED)
@pytest.mark.parametrize("spec", SPECS[:3], ids=SPEC_IDS[:3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_no_host_sync_in_forward_and_backward(monkeypatch, impl, spec, dtype, reduction):
    z, t = confident_rows(N=24, pad_every=5)
    x = z.to(dtype).requires_grad_(True)
    raise_target_errors(wait=True)
    assert self_check(impl, "cpu") is None  # its one-off start-up check is not part of the loss
    counter = SyncCounter(monkeypatch)
    res = encouraging_loss_parts(x, t, spec, reduction=reduction, impl=impl, want_stats=True, sync_free=True,
                                 chunk_rows=5)
    res.loss.sum().backward()
    monkeypatch.undo()
    assert counter.calls == []
    # and it computed the loss: against the CPU path
    y = z.to(dtype).requires_grad_(True)
    want = encouraging_loss_parts(y, t, spec, reduction=reduction, impl=impl, want_stats=True, chunk_rows=5)
    want.loss.sum().backward()
    torch.testing.assert_close(res.loss, want.loss)
    torch.testing.assert_close(x.grad, y.grad)


@pytest.mark.parametrize("impl", impls.FUSED)
def test_device_path_with_two_classes(impl):
    """V = 2 on the device code path (the best other logit from the top two)."""
    g = torch.Generator().manual_seed(3)
    z = torch.randn(12, 2, generator=g) * 4
    t = torch.randint(0, 2, (12,), generator=g)
    t[::5] = -100
    results = []
    for sync_free in (True, False):
        x = z.clone().requires_grad_(True)
        res = encouraging_loss_parts(x, t, SPECS[0], reduction="sum", impl=impl, want_stats=True, sync_free=sync_free)
        res.loss.backward()
        results.append((res.loss.detach(), res.stats.vector(), x.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("impl", impls.FUSED)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("upstream", [1.0, 2.0, -0.5])
def test_a_scalar_upstream_gradient_scales_the_gradient_formed_in_forward(impl, reduction, upstream):
    """fp32 logits on the CPU: the gradient is formed in forward and only
    scaled in backward (left alone for an upstream 1); against the float64
    reference's autograd."""
    from tests.helpers.reference import el_reference, reduce

    z, t = confident_rows(N=24, pad_every=5)
    spec = SPECS[0]
    x = z.clone().requires_grad_(True)
    (encouraging_loss_parts(x, t, spec, reduction=reduction, impl=impl).loss * upstream).backward()
    xr = z.double().requires_grad_(True)
    (reduce(el_reference(xr, t, **dataclasses.asdict(spec))[0], t, reduction) * upstream).backward()
    torch.testing.assert_close(x.grad.double(), xr.grad, rtol=1e-5, atol=1e-6)


def test_scaled_by_upstream_in_place():
    from wce_fairseq.ops.function import scaled_by_upstream

    grad = torch.arange(6.0).reshape(2, 3)
    assert scaled_by_upstream(grad, torch.tensor(1.0), "mean") is grad and grad.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert scaled_by_upstream(grad, torch.tensor(2.0), "sum") is grad and grad.tolist() == [[0, 2, 4], [6, 8, 10]]
    assert scaled_by_upstream(grad, torch.tensor([1.0, -1.0]), "none").tolist() == [[0, 2, 4], [-6, -8, -10]]


def test_a_gradient_without_logits_still_refuses_a_second_derivative():
    """The custom-op path hands over no logits: the gradient itself then
    carries the node that raises when a second derivative is taken."""
    grad = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    with torch.enable_grad():
        out = once_differentiable(grad, "chunked", None)
    torch.testing.assert_close(out.detach(), grad)
    with pytest.raises(RuntimeError, match="the chunked encouraging loss has an analytic first derivative only"):
        out.sum().backward()


@pytest.mark.parametrize("need_grad", [True, False])
def test_fp32_logits_on_the_cpu_form_the_gradient_in_forward(need_grad):
    """The chunked kernel on fp32 CPU logits forms the gradient while each
    chunk is in cache and keeps no row state; without need_grad, neither."""
    z, t = confident_rows(N=12)
    fwd = kernel_forward(ChunkedKernel, z, prepare_targets(t, z.shape[1], -100), SPECS[0], "sum", False, need_grad,
                         ImplOptions())
    assert (fwd.grad is not None) is need_grad
    assert fwd.rows is None
