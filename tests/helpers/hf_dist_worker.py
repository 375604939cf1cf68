"""One rank of the two-process (torchrun, gloo, CPU) Hugging Face tests in
tests/integrations/hf/test_distributed.py: for each model shape, the
Trainer with the model's own loss and with the encouraging loss at ρ = 0,
ε = 0 (losses and parameters), the diagnostics of one step with the bonus
on, and the fused projection against the logits. Rank 0 writes what it saw
as JSON to the path given.

    torchrun --nproc_per_node 2 tests/helpers/hf_dist_worker.py OUT.json
"""
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from tests.helpers import hf_models as H  # noqa: E402
from wce_fairseq.integrations.hf import use_encouraging_loss  # noqa: E402


def run(kind, out, n=8, max_steps=2, **loss_options):
    """Train; (logged rows, parameters). No loss options: the model's own
    loss. 8 sentences, 4 per rank: every step's global batch is all of them,
    whatever order the sampler draws them in."""
    t = H.trainer(kind, out, n=n, max_steps=max_steps)
    if loss_options:
        use_encouraging_loss(t, **loss_options)
    t.train()
    rows = [r for r in t.state.log_history if "loss" in r and "train_runtime" not in r]
    return rows, H.params(t.model)


def fsdp_grads(kind, fused, shard_head=False):
    """FSDP2 (``fully_shard`` on each layer and the root; the output embedding
    in the root unit, or a unit of its own): one step's loss and gradients,
    gathered, with the logits or the fused projection; or the refusal."""
    from torch.distributed.fsdp import fully_shard

    from wce_fairseq.integrations.hf import encouraging_loss_func
    from wce_fairseq.integrations.hf.fused import FusedProjection
    from wce_fairseq.ops.bonus import ELConfigError

    m = H.model(kind)
    layers = m.model.layers if kind in H.CAUSAL else [*m.model.encoder.layers, *m.model.decoder.layers]
    for layer in layers:
        fully_shard(layer)
    if shard_head:
        fully_shard(m.get_output_embeddings())
    fully_shard(m)
    b = H.batch(kind, 4, seed=1 + int(os.environ["RANK"]))
    inputs = {k: v for k, v in b.items() if k != "labels"}
    fn = encouraging_loss_func(label_smoothing=0.1, log_end=0.75)
    fn.bind_model(m)
    around = None
    if fused:
        try:
            around = FusedProjection(m, fn).around_forward(b["labels"])
        except ELConfigError as e:
            return {"refused": str(e)}
    if around is not None:
        with around:
            out = m(**inputs)
    else:
        out = m(**inputs)
    loss = fn(out, b["labels"])
    loss.backward()
    return {"loss": float(loss), "logits_positions": out.logits.shape[-2],
            "grads": {k: p.grad.full_tensor() for k, p in m.named_parameters() if p.grad is not None}}


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def main(path):
    rank = int(os.environ["RANK"])
    tmp = os.path.join(os.path.dirname(path), f"rank{rank}")
    seen = {"world_size": int(os.environ["WORLD_SIZE"]), "shapes": {}}
    for kind in H.SHAPES:
        own, p_own = run(kind, os.path.join(tmp, kind, "own"))
        ours, p_ours = run(kind, os.path.join(tmp, kind, "ours"), bonus_weight=0.0)
        # the bonus on: the diagnostics of the first step
        diag, _ = run(kind, os.path.join(tmp, kind, "diag"), max_steps=1, label_smoothing=0.1, log_end=0.75)
        entry = {"own": [r["loss"] for r in own], "ours": [r["loss"] for r in ours],
                 "param_diff": max_diff(p_own, p_ours), "ours_params": {k: v.tolist() for k, v in p_ours.items()},
                 "diagnostics": diag[0]}
        # the fused projection against the logits, bonus and smoothing on
        opts = dict(label_smoothing=0.1, log_end=0.75)
        plain, p_plain = run(kind, os.path.join(tmp, kind, "plain"), **opts)
        fused, p_fused = run(kind, os.path.join(tmp, kind, "fused"), fuse_projection=True, **opts)
        entry.update(plain=[r["loss"] for r in plain], fused=[r["loss"] for r in fused],
                     fused_param_diff=max_diff(p_plain, p_fused),
                     fused_param_scale=max(float(v.abs().max()) for v in p_plain.values()))
        seen["shapes"][kind] = entry
    for kind in ("llama", "marian"):
        plain, fused = fsdp_grads(kind, fused=False), fsdp_grads(kind, fused=True)
        seen["fsdp"] = seen.get("fsdp", {})
        seen["fsdp"][kind] = {"loss": [plain["loss"], fused["loss"]], "fused_logits_positions": fused["logits_positions"],
                              "grad_diff": max_diff(plain["grads"], fused["grads"]),
                              "grad_scale": max(float(g.abs().max()) for g in plain["grads"].values())}
    seen["fsdp_head_unit"] = fsdp_grads("llama", fused=True, shard_head=True)
    seen["distributed"] = torch.distributed.is_initialized() and torch.distributed.get_world_size()
    if rank == 0:
        with open(path, "w") as f:
            json.dump(seen, f)


if __name__ == "__main__":
    main(sys.argv[1])
