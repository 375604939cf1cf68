"""Worker for the two-process (gloo, CPU) equivalence test. Each worker
imports the plugin the way fairseq does (--user-dir), computes the criterion
on its share of the global batch, and all-reduces loss, logging outputs and
gradients, as fairseq's data-parallel trainer does."""
import argparse
import sys

import torch
import torch.distributed as dist


def worker(rank, world, init_file, out_file, plugin):
    from fairseq import utils

    utils.import_user_module(argparse.Namespace(user_dir=plugin))  # as fairseq does in every worker
    assert "wce_fairseq" in sys.modules
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    from tests.helpers.fairseq_objects import make_criterion, make_model, make_sample, make_task

    task = make_task()
    model = make_model(task, seed=0)
    crit = make_criterion(task, label_smoothing=0.1, log_end=0.75, report_accuracy=True)
    full = make_sample(task, (5, 3, 7, 4), seed=2)
    share = shard(full, rank, world)
    loss, _, log = crit(model, share)
    loss.backward()
    keys = sorted(k for k, v in log.items() if isinstance(v, (int, float, torch.Tensor)))
    vec = torch.tensor([float(log[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(vec)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    for g in grads:
        dist.all_reduce(g)
    if rank == 0:
        torch.save({"log": dict(zip(keys, vec.tolist())), "grads": grads}, out_file)
    dist.destroy_process_group()


def shard(sample, rank, world):
    idx = torch.arange(rank, sample["target"].size(0), world)
    tgt = sample["target"][idx]
    ni = sample["net_input"]
    return {
        "id": sample["id"][idx],
        "nsentences": len(idx),
        "ntokens": int(tgt.ne(1).sum()),  # pad is 1 in fairseq dictionaries
        "net_input": {k: v[idx] for k, v in ni.items()},
        "target": tgt,
    }
