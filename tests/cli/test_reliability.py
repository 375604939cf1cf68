"""Reliability through fairseq's command line: fairseq's own distributed
training against one process, and a soak with the unbounded bonus. (Exact
resume is the task's, in tests/test_task.py.)"""
import math
import re
import socket
import subprocess

import pytest
import torch

pytest.importorskip("fairseq")

from tests.helpers.cli import (PLUGIN, json_records, load_checkpoint, max_diff, same_record,  # noqa: E402
                               tool_env, train, train_command)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(toy_data):
    return toy_data(n_train=300, n_valid=40, n_test=40, vocab=150)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DIST_OPTS = ["--label-smoothing", "0.1", "--log-end", "0.75", "--bonus-weight", "1", "--bonus-schedule", "linear",
             "--bonus-schedule-length", "30", "--dropout", "0", "--max-tokens", "600", "--report-accuracy"]


def two_workers(data, save_dir, opts):
    """fairseq's own distributed training on the CPU: two ``fairseq-train``
    workers (gloo, ``--ddp-backend legacy_ddp``, ranks given on the command
    line as for a manual multi-node launch; torchrun/spawn and the c10d
    backend assume GPUs in fairseq itself), each importing the plugin itself
    through ``--user-dir``. Returns their outputs, rank 0 first."""
    dist = ["--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp", "--distributed-world-size", "2",
            "--distributed-init-method", f"tcp://127.0.0.1:{_free_port()}", "--distributed-no-spawn"]
    workers = [subprocess.Popen(train_command(data, save_dir, [*opts, *dist, "--distributed-rank", str(r)]),
                                env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for r in range(2)]
    logs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "distributed init (rank 1)" in logs[1] and "distributed init (rank 0)" in logs[0]
    return logs


@pytest.fixture(scope="module", params=[False, True], ids=["logits", "fused-projection"])
def distributed_run(request, data, tmp_path_factory):
    """Two workers for two epochs: (options, save dir, rank 0's log)."""
    opts = [*DIST_OPTS, *(["--el-fuse-projection"] if request.param else [])]
    save = tmp_path_factory.mktemp("two")
    return opts, save, two_workers(data, str(save), [*opts, "--max-epoch", "2"])[0]


def test_fairseq_distributed_two_workers_equal_one_process(data, tmp_path, distributed_run):
    """Two workers against one process with ``--update-freq 2`` on the same
    global batches: every logged train/valid value and the final parameters
    agree. Dropout is 0: fairseq seeds it per update, so a worker's mask would
    differ from the second micro-batch's."""
    opts, two, log = distributed_run
    one = train(data, str(tmp_path / "one"), [*opts, "--max-epoch", "2", "--update-freq", "2"])
    for kind in ("train", "valid"):
        a, b = json_records(one.stdout, kind), json_records(log, kind)  # rank 0 logs the reduced values
        assert len(a) == len(b) == 2
        for ra, rb in zip(a, b):
            # validation is sharded too: per-step sizes (fairseq averages wpb, bsz,
            # total, n_correct per step) differ; every loss, metric and accuracy agrees
            same_record(ra, rb, kind, skip=("wpb", "bsz", "total", "n_correct") if kind == "valid" else ())
    assert float(json_records(one.stdout)[-1]["num_updates"]) == 22  # 11 global batches per epoch
    drift = max_diff(load_checkpoint(tmp_path / "one" / "checkpoint_last.pt")["model"],
                     load_checkpoint(two / "checkpoint_last.pt")["model"])
    assert drift <= 1e-5


@pytest.mark.parametrize("distributed_run", [False], ids=["logits"], indirect=True)
def test_fairseq_distributed_run_resumes_with_default_flags(data, tmp_path, distributed_run):
    """Two workers stopped at update 6 (inside epoch 1), then the same command
    run again: it resumes from checkpoint_last.pt (rank 0 reads it and
    broadcasts it to rank 1, which unpickles it) with no extra flag, and logs
    epoch 2 and its validations exactly as the uninterrupted run."""
    opts, _, full = distributed_run
    part = str(tmp_path / "part")
    two_workers(data, part, [*opts, "--max-update", "6"])
    resumed = two_workers(data, part, [*opts, "--max-epoch", "2"])
    assert "Loaded checkpoint" in resumed[0]  # rank 0 logs for both
    a, b = json_records(full), json_records(resumed[0])
    assert [r["epoch"] for r in a] == [1, 2] and [r["epoch"] for r in b] == [1, 2]  # epoch 1's rest, then 2
    same_record(a[1], b[1], "train")
    va, vb = json_records(full, "valid"), json_records(resumed[0], "valid")
    assert len(va) == len(vb) == 2
    # the resumed run knows a best loss from its first part already
    same_record(va[0], vb[0], "valid", skip=("best_loss",))
    same_record(va[1], vb[1], "valid")


def test_two_workers_equal_one_process(tmp_path):
    """torch.distributed (gloo, CPU) around the criterion alone, in memory:
    fairseq's data-parallel reduction (sum of logging outputs and of
    gradients) across two spawned workers equals one process on the whole
    batch, gradient for gradient (the fairseq-train test above checks the
    logs and the parameters that come out)."""
    import torch.multiprocessing as mp

    from tests.helpers import dist_worker
    from fairseq.logging import metrics
    from tests.helpers.fairseq_objects import make_criterion, make_model, make_sample, make_task

    from wce_fairseq.criterions.encouraging_ce import EncouragingCrossEntropyCriterion

    out = tmp_path / "dist.pt"
    mp.spawn(dist_worker.worker, args=(2, str(tmp_path / "init"), str(out), PLUGIN), nprocs=2, join=True)
    got = torch.load(out, weights_only=False)

    task = make_task()
    model = make_model(task, seed=0)
    crit = make_criterion(task, label_smoothing=0.1, log_end=0.75, report_accuracy=True)
    full = make_sample(task, (5, 3, 7, 4), seed=2)
    loss, _, log = crit(model, full)
    loss.backward()
    for k, v in got["log"].items():
        assert v == pytest.approx(float(log[k]), rel=1e-5, abs=1e-5), k
    for g, p in zip(got["grads"], model.parameters()):
        torch.testing.assert_close(g, p.grad if p.grad is not None else torch.zeros_like(p), rtol=1e-4, atol=1e-6)
    # and the metrics fairseq would print are those of the single process
    def reduced(logs):
        with metrics.aggregate() as agg:
            EncouragingCrossEntropyCriterion.reduce_metrics(logs)
            return agg.get_smoothed_values()

    single = reduced([log])
    multi = reduced([got["log"]])
    for k in ("loss", "nll_loss", "bonus", "bonus_weight", "target_prob", "well_classified", "margin", "accuracy"):
        assert multi[k] == pytest.approx(single[k], abs=1e-3), k


def test_soak_unbounded_bonus_high_lr(data, tmp_path):
    """LE = 1 (the unbounded log) at a high learning rate for 300 updates:
    training either goes on with finite logged losses or stops with fairseq's
    clear NaN/Inf message — never a silent NaN in the log."""
    p = train(data, str(tmp_path / "soak"),
              ["--label-smoothing", "0.1", "--log-end", "1", "--bonus-weight", "1", "--lr", "1e-2",
               "--max-tokens", "300", "--max-update", "300", "--log-interval", "10", "--no-save",
               "--log-format", "simple"], check=False)
    out = p.stdout + p.stderr
    losses = []
    for line in out.splitlines():
        if "| train_inner |" in line or "| train |" in line:
            losses += [float(v) for v in re.findall(r"(?:^|[\s,|])loss[= ]([^\s,|]+)", line)]
    assert len(losses) >= 10, out[-2000:]
    assert all(math.isfinite(v) for v in losses), losses
    if p.returncode != 0:
        assert "Nan/Inf" in out or "nan" in out.splitlines()[-1].lower(), out[-2000:]
    else:
        assert "num_updates=300" in out or "num_updates 300" in out
