"""SPEC §6: exact resume, distributed equivalence, soak with the unbounded bonus."""
import math
import re

import pytest
import torch

pytest.importorskip("fairseq")

from cli_helpers import PLUGIN, json_records, make_toy_data, train  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_toy_data(str(tmp_path_factory.mktemp("rel")), n_train=300, n_valid=40, n_test=40, vocab=150)


def _model_state(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def _max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _full_and_resumed(data, root, opts, criterion=("--criterion", "encouraging_ce")):
    full = train(data, str(root / "full"), [*opts, "--max-epoch", "4"], criterion=criterion)
    part1 = train(data, str(root / "part"), [*opts, "--max-epoch", "2"], criterion=criterion)
    part2 = train(data, str(root / "part"), [*opts, "--max-epoch", "4"], criterion=criterion)
    a = json_records(full.stdout)
    b = json_records(part1.stdout) + json_records(part2.stdout)
    drift = _max_diff(_model_state(root / "full" / "checkpoint_last.pt"),
                      _model_state(root / "part" / "checkpoint_last.pt"))
    return a, b, drift


@pytest.fixture(scope="module")
def stock_drift(data, tmp_path_factory):
    """fairseq's own resume is not bit-exact on the CPU (seen with the stock
    label-smoothed CE and dropout 0: parameters differ by ~1e-3 after a few
    epochs, while every logged loss agrees). Measure that drift here."""
    _, _, drift = _full_and_resumed(data, tmp_path_factory.mktemp("stock"), ["--label-smoothing", "0.1"],
                                    criterion=("--criterion", "label_smoothed_cross_entropy"))
    return drift


@pytest.mark.parametrize("schedule", [
    ["--bonus-schedule", "linear", "--bonus-schedule-unit", "epoch", "--bonus-schedule-length", "3"],
    ["--bonus-schedule", "cos", "--bonus-schedule-unit", "update", "--bonus-schedule-length", "25"],
], ids=["epoch-linear", "update-cos"])
def test_resume_is_exact(data, tmp_path, schedule, stock_drift):
    opts = ["--label-smoothing", "0.1", "--log-end", "0.75", "--bonus-weight", "2", *schedule]
    a, b, drift = _full_and_resumed(data, tmp_path, opts)
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        # the bonus weight is a pure function of the restored counters: identical
        assert ra["bonus_weight"] == rb["bonus_weight"] and ra["num_updates"] == rb["num_updates"]
        for key in ("loss", "nll_loss", "bonus"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), abs=2e-3), (ra["epoch"], key)
    weights = [float(r["bonus_weight"]) for r in a]
    assert weights[0] < weights[-1] <= 2.0  # the schedule really advanced
    # the plugin adds no drift of its own beyond fairseq's stock resume
    assert drift <= 3 * stock_drift + 1e-6, (drift, stock_drift)


def test_two_workers_equal_one_process(tmp_path):
    """torch.distributed (gloo, CPU) around the criterion: fairseq's own
    launcher needs GPUs, so the test reproduces its data-parallel reduction —
    sum of logging outputs and of gradients — across two spawned workers."""
    import torch.multiprocessing as mp

    import dist_worker
    from fairseq.logging import metrics
    from fairseq_helpers import make_criterion, make_model, make_sample, make_task

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
