"""ops/common.py: the targets' preamble every implementation shares, and the
per-row gradient factor."""
import pytest
import torch

from wce_fairseq.ops.common import grad_scale, prepare_targets, upstream_rows


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
