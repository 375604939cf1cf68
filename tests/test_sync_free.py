"""The chunked path on a GPU must not wait for the device inside its chunk loop.
Its sync-free mode (on by default for CUDA tensors) is checked on the CPU: the
same results as the default mode, and no host-synchronising call per chunk."""
import pytest
import torch

from wce_fairseq.ops.bonus import BonusSpec
from wce_fairseq.ops.chunked import chunked_compute

SPECS = [
    BonusSpec(label_smoothing=0.1, log_end=0.5),  # the paper's bonus: the branch-free fast path
    BonusSpec(label_smoothing=0.1, log_end=1.0),  # the clamp: general path
    BonusSpec(label_smoothing=0.1, bonus="power", bonus_gamma=0.5, bonus_start=0.2),
    BonusSpec(label_smoothing=0.0),  # no smoothing: no fix-ups at all
]


def _problem(N=40, V=301, seed=0, pad_every=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, V, generator=g) * 3
    t = torch.randint(0, V, (N,), generator=g)
    z[::3].scatter_(1, t[::3, None], 25.0)  # confidently right
    z[1::5, 7] += 30.0  # confidently wrong (unless 7 is the target)
    valid = torch.ones(N, dtype=torch.bool)
    if pad_every:
        valid[::pad_every] = False
    return z, t, valid


@pytest.mark.parametrize("spec", SPECS, ids=["log-0.5", "log-1", "power-start", "no-smoothing"])
@pytest.mark.parametrize("pad_every", [0, 4, 1])  # none, some (contiguous chunks), all padding (compact)
@pytest.mark.parametrize("per_row_scale", [False, True])
def test_sync_free_equals_default(spec, pad_every, per_row_scale):
    z, t, valid = _problem(pad_every=pad_every)
    scale = torch.linspace(0.5, 2.0, z.shape[0]) if per_row_scale else 0.25
    a = chunked_compute(z, t, valid, spec, scale, True, True, chunk_rows=7, sync_free=False)
    b = chunked_compute(z, t, valid, spec, scale, True, True, chunk_rows=7, sync_free=True)
    for x, y in zip(a, b):
        torch.testing.assert_close(y, x, rtol=1e-6, atol=1e-7)


class _SyncCounter:
    """Counts the calls that make the host wait for the device's result."""

    NAMES = ("nonzero", "item", "tolist", "__bool__", "__int__", "__float__", "any", "all")

    def __init__(self, monkeypatch):
        self.calls = []
        for name in self.NAMES:
            orig = getattr(torch.Tensor, name)

            def wrapped(self_, *a, _orig=orig, _name=name, **k):
                self.calls.append(_name)
                return _orig(self_, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, wrapped)


@pytest.mark.parametrize("spec", SPECS[:2], ids=["log-0.5", "log-1"])
def test_sync_free_mode_makes_no_per_chunk_sync(monkeypatch, spec):
    z, t, valid = _problem(N=48, pad_every=5)
    counts = {}
    for chunk_rows in (48, 6):  # one chunk, eight chunks
        counter = _SyncCounter(monkeypatch)
        chunked_compute(z, t, valid, spec, 1.0, True, True, chunk_rows=chunk_rows, sync_free=True)
        counts[chunk_rows] = list(counter.calls)
        monkeypatch.undo()
    assert counts[6] == counts[48], counts  # what remains happens once per call
    assert len(counts[48]) <= 2, counts
    # and the default CPU mode does wait per chunk: the counter sees it
    counter = _SyncCounter(monkeypatch)
    chunked_compute(z, t, valid, spec, 1.0, True, True, chunk_rows=6, sync_free=False)
    assert len(counter.calls) > len(counts[6])


def test_cpu_worker_threads_equal_one_thread(monkeypatch):
    """Chunks walked by several threads (each single-threaded) give what one
    thread gives, and torch's thread count and grad mode are restored."""
    import wce_fairseq.ops.chunked as ch

    z, t, valid = _problem(N=90, V=301, pad_every=4)
    spec = SPECS[0]
    one = chunked_compute(z, t, valid, spec, 0.5, True, True, chunk_rows=7)
    before = torch.get_num_threads()
    monkeypatch.setattr(ch, "cpu_workers", lambda x, n: 3)
    with torch.enable_grad():
        many = chunked_compute(z, t, valid, spec, 0.5, True, True, chunk_rows=7)
        assert torch.is_grad_enabled()
    assert torch.get_num_threads() == before
    for a, b in zip(one, many):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


def test_worker_errors_reach_the_caller():
    from wce_fairseq.ops.chunked import run_chunks

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
    valid = torch.ones(4, dtype=torch.bool)
    st = chunked_compute(z, t, valid, SPECS[0], 1.0, False, True, sync_free=sync_free)[4]
    assert st[3].item() == pytest.approx(187.5 + 1.0 - 500.0 + 1e4, abs=1e-3)  # summed margins
    assert st[4].item() == 3  # rows whose argmax is the target
