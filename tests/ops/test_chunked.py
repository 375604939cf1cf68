"""ops/chunked.py: the stages, the device (sync-free) and CPU paths, chunking."""
import dataclasses

import pytest
import torch

from tests.helpers.data import SPEC_IDS, SPECS, confident_rows, make_inputs
from tests.helpers.sync_counter import SyncCounter
from wce_fairseq.functional import encouraging_loss_parts
from wce_fairseq.ops.bonus import BonusSpec
from wce_fairseq.ops.chunked import ChunkedKernel, fast_log_bonus
from wce_fairseq.ops.common import grad_scale, prepare_targets


@pytest.mark.parametrize("spec, fast", [
    (BonusSpec(label_smoothing=0.1), True),  # the paper's settings: LE = 0.5
    (BonusSpec(log_end=1.0), True),
    (BonusSpec(log_end=0.49), False),  # the tangent reaches below p = 1/2
    (BonusSpec(bonus_start=0.1), False),
    (BonusSpec(bonus="power", bonus_gamma=1.0), False),
])
def test_the_branch_free_bonus_pass_takes_the_papers_settings(spec, fast):
    """The branch-free pass holds where every entry it sees has p <= 1/2 on
    the log curve: log bonus, no start, LE >= 1/2 (LE = 0.5 included)."""
    assert fast_log_bonus(spec) is fast


def test_chunk_size_does_not_matter():
    logits, target = make_inputs((50, 97), torch.float32, 13)
    spec = BonusSpec(label_smoothing=0.1)
    outs = []
    for rows in (1, 7, 50, None):
        x = logits.clone().requires_grad_()
        loss = encouraging_loss_parts(x, target, spec, impl="chunked", chunk_rows=rows).loss
        loss.backward()
        outs.append((loss.detach(), x.grad))
    for l, g in outs[1:]:
        torch.testing.assert_close(l, outs[0][0])
        torch.testing.assert_close(g, outs[0][1])


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("pad_every", [0, 4, 1])  # none, some, all padding
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_device_path_equals_cpu_path(spec, pad_every, dtype):
    """Forward (loss parts, diagnostics, row state) and the gradient from the
    row state, with several chunks and a per-row scale."""
    z, t = confident_rows(pad_every=pad_every)
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


def test_counter_sees_the_cpu_path_wait(monkeypatch):
    """The CPU path finds its rare fix-up rows with nonzero: the counter must see it."""
    z, t = confident_rows(N=24)
    counter = SyncCounter(monkeypatch)
    encouraging_loss_parts(z.requires_grad_(True), t, SPECS[0], impl="chunked", want_stats=True)
    monkeypatch.undo()
    assert any(c.startswith("nonzero") for c in counter.calls), counter.calls


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


@pytest.mark.parametrize("spec", [BonusSpec(label_smoothing=0.1, log_end=0.3),
                                  BonusSpec(label_smoothing=0.1, log_end=0.6, bonus_start=0.2),
                                  BonusSpec(label_smoothing=0.1, log_end=1.0, bonus_start=0.1),
                                  BonusSpec(label_smoothing=0.1, bonus="cos", bonus_smoothing=0.05),
                                  BonusSpec(label_smoothing=0.1)],
                         ids=["log-0.3", "log-start", "log-1-start", "cos", "log-0.5"])
@pytest.mark.parametrize("sync_free", [False, True])
def test_gradient_formed_in_backward_against_the_reference(spec, sync_free):
    """The backward pass from the saved row state (what bf16 logits and the
    device path run), bonus curves off the branch-free path included, against
    autograd of the float64 reference."""
    from tests.helpers.reference import el_reference

    z, t = confident_rows(pad_every=4)
    targets = prepare_targets(t, z.shape[1], -100)
    fwd = ChunkedKernel.forward(z, targets, spec, want_stats=False, save_rows=True, sync_free=sync_free, chunk_rows=7)
    grad = ChunkedKernel.backward(z, targets, spec, fwd.rows, grad_scale(targets, "sum"), sync_free=sync_free,
                                  chunk_rows=7)
    zr = z.double().requires_grad_(True)
    el_reference(zr, t, **dataclasses.asdict(spec))[0].sum().backward()
    torch.testing.assert_close(grad.double(), zr.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("inplace", [False, True])
def test_backward_writes_over_the_logits_only_when_asked(inplace):
    """inplace=True: the gradient takes the logits' memory (no second N x V
    tensor); otherwise the logits are left as they were."""
    z, t = confident_rows(N=12)
    z = z.to(torch.bfloat16)
    before = z.clone()
    targets = prepare_targets(t, z.shape[1], -100)
    fwd = ChunkedKernel.forward(z, targets, SPECS[0], want_stats=False, save_rows=True)
    grad = ChunkedKernel.backward(z, targets, SPECS[0], fwd.rows, grad_scale(targets, "sum"), inplace=inplace)
    assert (grad.data_ptr() == z.data_ptr()) is inplace
    if not inplace:
        assert torch.equal(z, before)
    want = ChunkedKernel.backward(before, targets, SPECS[0], fwd.rows, grad_scale(targets, "sum"))
    torch.testing.assert_close(grad, want, rtol=0, atol=0)
