"""Fixes for fairseq releases users have: a model loaded from its weights must
translate (fairseq 0.12.2 + torch >= 1.13 could not, see fairseq_compat.py)."""
import pytest
import torch

pytest.importorskip("fairseq")

from fairseq_helpers import make_model, make_sample, make_task  # noqa: E402


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
        assert getattr(type(layer)._load_from_state_dict, "_wce_no_bt", False)
        assert layer.load_to_BT is False
    else:
        assert not getattr(type(layer)._load_from_state_dict, "_wce_no_bt", False)


def test_torch_version_parsing():
    from wce_fairseq.fairseq_compat import torch_version

    v = torch_version()
    assert len(v) == 2 and v >= (1, 12)
