"""ops/targets.py: out-of-range target ids are refused by every
implementation, at once on the CPU path, from the device without a host read
on the device path. And the targets' preamble every implementation shares
(ops/common.py): ids made safe, the count, the per-row gradient factor."""
import pytest
import torch

from tests.helpers import impls
from tests.helpers.data import SPECS, confident_rows
from wce_fairseq import functional as F
from wce_fairseq.functional import encouraging_loss_parts
from wce_fairseq.ops.bonus import BonusSpec
from wce_fairseq.ops.common import grad_scale, prepare_targets, upstream_rows
from wce_fairseq.ops.targets import raise_target_errors


@pytest.mark.parametrize("bad", [-1, 7, 10**6])
def test_out_of_range_target_raises(impl, bad):
    logits = torch.randn(4, 7, requires_grad=True)
    target = torch.tensor([0, 3, bad, -100])
    with pytest.raises(IndexError, match=rf"^target holds class id {bad}, outside \[0, 7\) and not ignore_index \(-100\)$"):
        F.encouraging_loss(logits, target, label_smoothing=0.1, impl=impl)


@pytest.mark.parametrize("impl", impls.FUSED)
def test_out_of_range_target_raises_in_fused_projection(impl):
    from wce_fairseq.ops.fused_linear import fused_linear_encouraging_loss

    h, w = torch.randn(3, 4), torch.randn(9, 4)
    with pytest.raises(IndexError, match="class id 9"):
        fused_linear_encouraging_loss(h, w, None, torch.tensor([1, 9, 2]), BonusSpec(), impl=impl)


def test_ignore_index_outside_the_range_is_fine():
    logits = torch.randn(3, 5)
    loss = F.encouraging_loss(logits, torch.tensor([1, 1000, 2]), ignore_index=1000, reduction="sum")
    ref = F.encouraging_loss(logits[[0, 2]], torch.tensor([1, 2]), reduction="sum", impl="reference")
    torch.testing.assert_close(loss, ref.float())


@pytest.mark.parametrize("impl", impls.FUSED)
def test_out_of_range_target_reported_without_a_host_read(impl):
    """The device path checks targets on the device: the IndexError (id and V)
    comes with the next call or :func:`raise_target_errors`, once the device
    has got there, and the bad token counts as padding meanwhile."""
    z, t = confident_rows(N=6, V=11)
    t[2] = 11
    raise_target_errors(wait=True)
    res = encouraging_loss_parts(z, t, SPECS[0], reduction="sum", impl=impl, sync_free=True)
    ok = t.clone()
    ok[2] = -100
    with pytest.raises(IndexError, match=r"^target holds class id 11, outside \[0, 11\) and not ignore_index \(-100\)$"):
        encouraging_loss_parts(z, ok, SPECS[0], impl=impl, sync_free=True)  # the next call
    want = encouraging_loss_parts(z, ok, SPECS[0], reduction="sum", impl=impl)  # reported once
    torch.testing.assert_close(res.loss, want.loss)
    encouraging_loss_parts(z, t, SPECS[0], impl=impl, sync_free=True)
    with pytest.raises(IndexError, match="class id 11"):
        raise_target_errors(wait=True)


def test_targets_replace_ignored_and_out_of_range_ids_and_count_the_rest():
    t = prepare_targets(torch.tensor([3, -100, 0, 7, -1, 6], dtype=torch.int32), V=7, ignore_index=-100)
    assert t.safe.dtype == torch.int64
    assert t.safe.tolist() == [3, 0, 0, 0, 0, 6]
    assert t.valid.tolist() == [True, False, True, False, False, True]
    assert t.n_valid.item() == 3


def test_a_slice_keeps_the_whole_call_s_count():
    """Chunks divide by the count of the whole call, not their own."""
    t = prepare_targets(torch.tensor([1, 2, -100, 4, 5]), V=6, ignore_index=-100)
    part = t.slice(1, 3)
    assert part.safe.tolist() == [2, 0] and part.valid.tolist() == [True, False]
    assert part.n_valid.item() == 4


@pytest.mark.parametrize("reduction, want", [("sum", [1.0, 0.0, 1.0, 1.0]), ("none", [1.0, 0.0, 1.0, 1.0]),
                                             ("mean", [1 / 3, 0.0, 1 / 3, 1 / 3])])
def test_grad_scale(reduction, want):
    t = prepare_targets(torch.tensor([1, -100, 0, 2]), V=3, ignore_index=-100)
    got = grad_scale(t, reduction)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor(want), rtol=0, atol=0)


def test_grad_scale_of_a_batch_with_nothing_to_count_is_zero():
    got = grad_scale(prepare_targets(torch.tensor([-100, -100]), V=3, ignore_index=-100), "mean")
    assert got.tolist() == [0.0, 0.0]


def test_upstream_rows():
    assert upstream_rows(torch.tensor(2.0, dtype=torch.float64), 3).tolist() == [2.0, 2.0, 2.0]
    g = upstream_rows(torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.bfloat16), 4)
    assert g.dtype == torch.float32 and g.tolist() == [1.0, 2.0, 3.0, 4.0]


class _Unfinished:
    """A deferred check whose device work has not finished (on a GPU: a copy
    still in flight); it records being waited for."""

    def __init__(self):
        self.waited = False

    def done(self):
        return False

    def wait(self):
        self.waited = True

    def error(self):
        return None


@pytest.mark.parametrize("pending, waited", [(3, 0), (64, 0), (65, 1), (70, 6)])
def test_pending_checks_wait_for_the_device_only_past_the_bound(monkeypatch, pending, waited):
    """Unfinished checks stay queued (no synchronisation) up to 64; past it the
    oldest are waited for until 64 remain; ``wait=True`` waits for them all."""
    import collections

    from wce_fairseq.ops import targets

    checks = [_Unfinished() for _ in range(pending)]
    monkeypatch.setattr(targets, "_PENDING", collections.deque(checks))
    raise_target_errors()
    assert [c.waited for c in checks] == [True] * waited + [False] * (pending - waited)
    assert list(targets._PENDING) == checks[waited:]
    raise_target_errors(wait=True)
    assert all(c.waited for c in checks) and not targets._PENDING
