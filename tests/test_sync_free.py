"""On a GPU the loss must never make the host wait for the device. The device
code path (``sync_free``, on by default for CUDA tensors) is forced on CPU
tensors here: the same results as the CPU path, and not one synchronising
call from the package over a whole forward + backward."""
import os
import sys

import pytest
import torch

from wce_fairseq.functional import encouraging_loss_parts, runnable_impls
from wce_fairseq.ops.bonus import BonusSpec
from wce_fairseq.ops.chunked import ChunkedKernel
from wce_fairseq.ops.common import grad_scale, prepare_targets
from wce_fairseq.ops.fused_linear import fused_linear_encouraging_loss
from wce_fairseq.ops.targets import raise_target_errors

SPECS = [
    BonusSpec(label_smoothing=0.1, log_end=0.5),  # the paper's bonus: the branch-free fast path
    BonusSpec(label_smoothing=0.1, log_end=1.0),  # the clamp: general path
    BonusSpec(label_smoothing=0.1, bonus="power", bonus_gamma=0.5, bonus_start=0.2),
    BonusSpec(label_smoothing=0.0),  # no smoothing: no fix-ups at all
]
SPEC_IDS = ["log-0.5", "log-1", "power-start", "no-smoothing"]
PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(sys.modules["wce_fairseq"].__file__)))


def _problem(N=40, V=301, seed=0, pad_every=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, V, generator=g) * 3
    t = torch.randint(0, V, (N,), generator=g)
    z[::3].scatter_(1, t[::3, None], 25.0)  # confidently right
    z[1::5, 7] += 30.0  # confidently wrong (unless 7 is the target)
    if pad_every:
        t[::pad_every] = -100
    return z, t


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("pad_every", [0, 4, 1])  # none, some, all padding
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_device_path_equals_cpu_path(spec, pad_every, dtype):
    """Forward (loss parts, diagnostics, row state) and the gradient from the
    row state, with several chunks and a per-row scale."""
    z, t = _problem(pad_every=pad_every)
    z = z.to(dtype)
    targets = prepare_targets(t, z.shape[1], -100)
    scale = torch.linspace(0.5, 2.0, z.shape[0]) * grad_scale(targets, "sum")
    outs = []
    for sync_free in (False, True):
        fwd = ChunkedKernel.forward(z, targets, spec, want_stats=True, save_rows=True, sync_free=sync_free,
                                    chunk_rows=7)
        grad = ChunkedKernel.backward(z, targets, spec, fwd.rows, scale, sync_free=sync_free, chunk_rows=7)
        outs.append((fwd.loss, fwd.nll, fwd.bonus, fwd.stats.vector(), grad.float()))
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


class _SyncCounter:
    """Counts the calls from the package's own code that make the host wait
    for a device's result (read a value, or size an output by its data)."""

    METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "cpu",
               "masked_select")

    def __init__(self, monkeypatch):
        self.calls = []
        for name in self.METHODS:
            self._wrap(monkeypatch, torch.Tensor, name)
        for name in ("nonzero", "masked_select", "unique"):
            self._wrap(monkeypatch, torch, name)
        for name in ("__getitem__", "__setitem__"):  # indexing by a bool mask sizes the result by its data
            self._wrap(monkeypatch, torch.Tensor, name, only_bool_index=True)

    def _wrap(self, monkeypatch, owner, name, only_bool_index=False):
        orig = getattr(owner, name)
        calls = self.calls

        def wrapped(*a, **k):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(PACKAGE) and (not only_bool_index or _has_bool_index(a[1])):
                calls.append(f"{name} at {os.path.relpath(caller, PACKAGE)}:{sys._getframe(1).f_lineno}")
            return orig(*a, **k)

        monkeypatch.setattr(owner, name, wrapped)


def _has_bool_index(index):
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


IMPLS = [i for i in runnable_impls() if i in ("chunked", "triton")]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("spec", SPECS[:3], ids=SPEC_IDS[:3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_no_host_sync_in_forward_and_backward(monkeypatch, impl, spec, dtype, reduction):
    z, t = _problem(N=24, pad_every=5)
    x = z.to(dtype).requires_grad_(True)
    raise_target_errors(wait=True)
    counter = _SyncCounter(monkeypatch)
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


def test_counter_sees_the_cpu_path_wait(monkeypatch):
    """The CPU path finds its rare fix-up rows with nonzero: the counter must see it."""
    z, t = _problem(N=24)
    counter = _SyncCounter(monkeypatch)
    encouraging_loss_parts(z.requires_grad_(True), t, SPECS[0], impl="chunked", want_stats=True)
    monkeypatch.undo()
    assert any(c.startswith("nonzero") for c in counter.calls), counter.calls


@pytest.mark.parametrize("impl", IMPLS)
def test_no_host_sync_in_the_fused_projection(monkeypatch, impl):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(20, 8, generator=g, requires_grad=True)
    w = torch.randn(50, 8, generator=g, requires_grad=True)
    b = torch.randn(50, generator=g, requires_grad=True)
    t = torch.randint(0, 50, (20,), generator=g)
    t[::4] = -100
    raise_target_errors(wait=True)
    counter = _SyncCounter(monkeypatch)
    res = fused_linear_encouraging_loss(h, w, b, t, SPECS[0], reduction="mean", want_stats=True, chunk_rows=6,
                                        impl=impl, sync_free=True)
    res.loss.backward()
    monkeypatch.undo()
    assert counter.calls == []


@pytest.mark.parametrize("impl", IMPLS)
def test_out_of_range_target_reported_without_a_host_read(impl):
    """The device path checks targets on the device: the IndexError (id and V)
    comes with the next call or :func:`raise_target_errors`, once the device
    has got there, and the bad token counts as padding meanwhile."""
    z, t = _problem(N=6, V=11)
    t[2] = 11
    raise_target_errors(wait=True)
    res = encouraging_loss_parts(z, t, SPECS[0], reduction="sum", impl=impl, sync_free=True)
    ok = t.clone()
    ok[2] = -100
    with pytest.raises(IndexError, match=r"class id 11, outside \[0, 11\)"):
        encouraging_loss_parts(z, ok, SPECS[0], impl=impl, sync_free=True)  # the next call
    want = encouraging_loss_parts(z, ok, SPECS[0], reduction="sum", impl=impl)  # reported once
    torch.testing.assert_close(res.loss, want.loss)
    encouraging_loss_parts(z, t, SPECS[0], impl=impl, sync_free=True)
    with pytest.raises(IndexError, match="class id 11"):
        raise_target_errors(wait=True)


def test_cpu_worker_threads_equal_one_thread(monkeypatch):
    """Chunks walked by several threads (each single-threaded) give what one
    thread gives, and torch's thread count and grad mode are restored."""
    import wce_fairseq.ops.chunked as ch

    z, t = _problem(N=90, V=301, pad_every=4)
    targets = prepare_targets(t, z.shape[1], -100)
    scale = grad_scale(targets, "mean")

    def run():
        fwd = ChunkedKernel.forward(z, targets, SPECS[0], want_stats=True, grad_scale=scale, chunk_rows=7)
        return fwd.loss, fwd.nll, fwd.bonus, fwd.stats.vector(), fwd.grad

    one = run()
    before = torch.get_num_threads()
    monkeypatch.setattr(ch, "cpu_workers", lambda x, n: 3)
    with torch.enable_grad():
        many = run()
        assert torch.is_grad_enabled()
    assert torch.get_num_threads() == before
    for a, b in zip(one, many):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


def test_worker_errors_reach_the_caller():
    from wce_fairseq.ops.threads import run_chunks

    def fn(c0, c1, work):
        if c0 == 6:
            raise ValueError("chunk 6 failed")
        return c0

    spans = [(i, i + 1) for i in range(10)]
    assert run_chunks(lambda c0, c1, w: c0 * 10, spans, lambda: None, 3) == [i * 10 for i in range(10)]
    with pytest.raises(ValueError, match="chunk 6 failed"):
        run_chunks(fn, spans, lambda: None, 3)


@pytest.mark.parametrize("sync_free", [False, True])
def test_margin_when_the_target_leads_past_exp_range(sync_free):
    """The CPU path finds the best other logit from exp(z - max); where that
    underflows (a lead > 87) it falls back to the logits themselves."""
    z = torch.zeros(4, 50)
    t = torch.tensor([3, 7, 9, 11])
    z[0, 3], z[0, 5] = 200.0, 12.5  # lead of 187.5: exp underflows
    z[1, 7], z[1, 2] = 30.0, 29.0  # lead of 1
    z[2, 1] = 500.0  # confidently wrong by 500
    z[3, 11], z[3, 0] = 1e4, -1e4
    st = ChunkedKernel.forward(z, prepare_targets(t, 50, -100), SPECS[0], want_stats=True, sync_free=sync_free).stats
    assert st.sum_margin.item() == pytest.approx(187.5 + 1.0 - 500.0 + 1e4, abs=1e-3)
    assert st.n_correct.item() == 3  # rows whose argmax is the target
