"""Fixes for fairseq releases users have: a model loaded from its weights must
translate (fairseq 0.12.2 + torch >= 1.13 could not, see fairseq_compat.py)."""
import pytest
import torch

pytest.importorskip("fairseq")

from tests.helpers.fairseq_objects import make_model, make_sample, make_task  # noqa: E402


def test_loaded_model_runs_inference_like_the_trained_one():
    import wce_fairseq
    from wce_fairseq import fairseq_compat

    wce_fairseq.register()
    task = make_task()
    model = make_model(task, seed=3)
    sample = make_sample(task, lengths=(6, 3, 5))  # padded source: the case the stale path mishandles
    model.eval()
    with torch.no_grad():
        want = model.encoder(sample["net_input"]["src_tokens"], sample["net_input"]["src_lengths"])
    loaded = make_model(task, seed=4)
    loaded.load_state_dict(model.state_dict())  # what fairseq's checkpoint loading does
    loaded.eval()
    with torch.no_grad():
        got = loaded.encoder(sample["net_input"]["src_tokens"], sample["net_input"]["src_lengths"])
        out = loaded(**sample["net_input"])[0]
    mask = ~sample["net_input"]["src_tokens"].eq(task.src_dict.pad()).t().unsqueeze(-1)
    torch.testing.assert_close(got["encoder_out"][0] * mask, want["encoder_out"][0] * mask, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(out).all()
    layer = loaded.encoder.layers[0]
    if fairseq_compat.needs_bt_fix():  # fairseq 0.12.2 with torch >= 1.13: the fix is what makes this pass
        assert getattr(type(layer)._load_from_state_dict, "_wce_fix", False)
        assert layer.load_to_BT is False
    else:
        assert not getattr(type(layer)._load_from_state_dict, "_wce_fix", False)


def test_torch_version_parsing():
    from wce_fairseq.fairseq_compat import torch_version

    v = torch_version()
    assert len(v) == 2 and v >= (1, 12)


def _adaptive_log_probs_out_of_place(asm, x):
    """AdaptiveSoftmax's full log-probabilities, written here without any
    in-place operation: the head's log-softmax for the frequent words, each
    tail cluster's log-softmax plus that cluster's log-prior from the head."""
    flat = x.reshape(-1, x.shape[-1])
    head = torch.log_softmax(asm.head(flat), dim=-1)
    parts = [head[:, : asm.cutoff[0]]]
    for i, tail in enumerate(asm.tail):
        parts.append(torch.log_softmax(tail(flat), dim=-1) + head[:, asm.cutoff[0] + i : asm.cutoff[0] + i + 1])
    return torch.cat(parts, dim=-1).view(*x.shape[:-1], -1)


def test_adaptive_softmax_backward_is_exact():
    """fairseq's AdaptiveSoftmax changes its LogSoftmax output in place, which
    breaks every backward; the plugin's fix keeps the values and makes the
    gradient equal to that of an out-of-place formulation."""
    import wce_fairseq
    from fairseq.modules.adaptive_softmax import AdaptiveSoftmax

    from wce_fairseq import fairseq_compat

    wce_fairseq.register()
    assert fairseq_compat.needs_adaptive_softmax_fix()  # the fairseq installed here has the in-place add
    torch.manual_seed(0)
    asm = AdaptiveSoftmax(40, 16, [8, 20], dropout=0.0).double()
    assert isinstance(asm.lsm, fairseq_compat.CopyingLogSoftmax)
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    got = asm.get_log_prob(x, target=None)
    want = _adaptive_log_probs_out_of_place(asm, x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(got)
    g_got = torch.autograd.grad((got * w).sum(), [x, *asm.parameters()], allow_unused=True)
    g_want = torch.autograd.grad((want * w).sum(), [x, *asm.parameters()], allow_unused=True)
    for a, b in zip(g_got, g_want):
        if b is None:
            assert a is None or float(a.abs().max()) == 0.0
        else:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
