"""ops/threads.py: chunks walked by worker threads on the CPU."""
import pytest
import torch

from tests.helpers.data import SPECS, confident_rows
from wce_fairseq.ops.chunked import ChunkedKernel
from wce_fairseq.ops.common import grad_scale, prepare_targets


def test_cpu_worker_threads_equal_one_thread(monkeypatch):
    """Chunks walked by several threads (each single-threaded) give what one
    thread gives, and torch's thread count and grad mode are restored."""
    import wce_fairseq.ops.chunked as ch

    z, t = confident_rows(N=90, V=301, pad_every=4)
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
