"""Two processes (torchrun, gloo, CPU): the Hugging Face Trainer under DDP
with the encouraging loss (tests/helpers/hf_dist_worker.py), against the
model's own loss under DDP and against one process on the same global batch."""
import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")

from tests.helpers import hf_models as H  # noqa: E402
from wce_fairseq.integrations.hf import use_encouraging_loss  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DIAGNOSTICS = ("bonus_weight", "target_prob", "well_classified", "margin", "bonus")


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("hf_dist") / "seen.json"
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    p = subprocess.run([torchrun, "--nproc_per_node", "2", os.path.join(REPO, "tests/helpers/hf_dist_worker.py"),
                        str(out)], capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    seen = json.loads(out.read_text())
    assert seen["world_size"] == 2 and seen["distributed"] == 2
    return seen


@pytest.mark.parametrize("kind", H.SHAPES)
def test_weight_zero_equals_the_model_s_own_loss_under_ddp(two_processes, kind, tmp_path):
    """ρ = 0, ε = 0, two steps of two processes x 4 sentences: the logged
    losses and parameters of the model's own loss in one process on the same
    8 sentences per step; for the causal LMs also those of their own loss
    under DDP. (Marian's and T5's own loss is a per-process mean, which the
    Trainer, told that the model normalises by the whole batch's token count,
    scales by the number of processes: under DDP it is twice the loss here.)"""
    seen = two_processes["shapes"][kind]
    t = H.trainer(kind, tmp_path, n=8, max_steps=2, per_device_train_batch_size=8)
    t.train()
    assert seen["ours"] == pytest.approx(H.losses(t), rel=1e-5, abs=1e-6)
    for k, v in H.params(t.model).items():
        assert float((torch.tensor(seen["ours_params"][k]) - v).abs().max()) <= 1e-5, k
    if kind in H.CAUSAL:
        assert seen["ours"] == pytest.approx(seen["own"], rel=1e-5, abs=1e-6)
        assert seen["param_diff"] <= 1e-5


@pytest.mark.parametrize("kind", H.SHAPES)
def test_diagnostics_are_global_means(two_processes, kind, tmp_path):
    """The logged diagnostics of a step of two processes (4 sentences each)
    are those of one process on the same 8 sentences, token-weighted."""
    t = H.trainer(kind, tmp_path, n=8, max_steps=1, per_device_train_batch_size=8)
    use_encouraging_loss(t, label_smoothing=0.1, log_end=0.75)
    t.train()
    one = [r for r in t.state.log_history if "loss" in r and "train_runtime" not in r][0]
    two = two_processes["shapes"][kind]["diagnostics"]
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    for key in DIAGNOSTICS:
        assert two[key] == pytest.approx(one[key], abs=1.01e-4), key  # both logged to 4 decimals


@pytest.mark.parametrize("kind", H.SHAPES)
def test_fused_projection_equals_the_logits_under_ddp(two_processes, kind):
    seen = two_processes["shapes"][kind]
    assert seen["fused"] == pytest.approx(seen["plain"], rel=1e-5)
    assert seen["fused_param_diff"] <= 1e-4 * seen["fused_param_scale"]


@pytest.mark.parametrize("kind", ["llama", "marian"])
def test_fused_projection_under_fsdp_equals_the_logits(two_processes, kind):
    """FSDP2 (fully_shard per layer and at the root) on two CPU processes: the
    fused projection, run inside the root unit's forward where FSDP has
    gathered the output weight, gives the loss and every gathered gradient of
    the logits path; the model returns no logit positions."""
    seen = two_processes["fsdp"][kind]
    assert seen["loss"][1] == pytest.approx(seen["loss"][0], rel=1e-6)
    assert seen["fused_logits_positions"] == 0
    assert seen["grad_diff"] <= 1e-4 * seen["grad_scale"]


def test_an_output_embedding_sharded_on_its_own_is_refused(two_processes):
    assert "FSDPLinear, not a plain torch.nn.Linear" in two_processes["fsdp_head_unit"]["refused"]
