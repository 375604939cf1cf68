"""docs/design.md §6: exact resume, distributed equivalence, soak with the unbounded bonus."""
import math
import re
import socket
import subprocess

import pytest
import torch

pytest.importorskip("fairseq")

from cli_helpers import PLUGIN, json_records, make_toy_data, tool_env, train, train_command  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_toy_data(str(tmp_path_factory.mktemp("rel")), n_train=300, n_valid=40, n_test=40, vocab=150)


SPEED_KEYS = {"wps", "ups", "wall", "train_wall", "gb_free", "cuda_gb_allocated", "cuda_gb_reserved", "cuda_gb_free"}


def _checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _optimizer_tensors(ckpt):
    state = ckpt["last_optimizer_state"]["state"]
    return {f"{p}.{k}": v for p, entry in state.items() for k, v in entry.items() if torch.is_tensor(v)}


def _same_record(ra, rb, what, skip=()):
    keys = set(ra) - SPEED_KEYS - set(skip)
    assert keys == set(rb) - SPEED_KEYS - set(skip), what
    for key in sorted(keys):
        assert ra[key] == rb[key], (what, ra["epoch"], key, ra[key], rb[key])


def _full_and_resumed(data, root, opts, stop=("--max-epoch", "2"), criterion=("--criterion", "encouraging_ce")):
    full = train(data, str(root / "full"), [*opts, "--max-epoch", "4"], criterion=criterion)
    part1 = train(data, str(root / "part"), [*opts, *stop], criterion=criterion)
    part2 = train(data, str(root / "part"), [*opts, "--max-epoch", "4"], criterion=criterion)
    assert "Loaded checkpoint" in part2.stdout + part2.stderr  # it really resumed
    return full, part1, part2


RESUME_CASES = {
    "epoch-linear": ["--bonus-schedule", "linear", "--bonus-schedule-unit", "epoch", "--bonus-schedule-length", "3"],
    "update-cos": ["--bonus-schedule", "cos", "--bonus-schedule-unit", "update", "--bonus-schedule-length", "25"],
}


@pytest.mark.parametrize("schedule,stop", [
    ("epoch-linear", ("--max-epoch", "2")),
    ("update-cos", ("--max-epoch", "2")),
    ("update-cos", ("--max-update", "13")),  # stopped inside epoch 2 (9 updates per epoch)
], ids=["epoch-linear-after-epoch-2", "update-cos-after-epoch-2", "update-cos-mid-epoch-2"])
def test_resume_is_exact(data, tmp_path, schedule, stop):
    """4 uninterrupted epochs == stop (after epoch 2, or at update 13 inside
    epoch 2) and resume from checkpoint_last.pt: the same per-epoch log lines
    (loss, nll, bonus, ρ_t, diagnostics, lr, update count) and the same final
    parameters and Adam state. Dropout stays on (0.1): fairseq reseeds it from
    the update count."""
    opts = ["--label-smoothing", "0.1", "--log-end", "0.75", "--bonus-weight", "2", *RESUME_CASES[schedule]]
    full, part1, part2 = _full_and_resumed(data, tmp_path, opts, stop)
    a = json_records(full.stdout)
    b = json_records(part1.stdout) + json_records(part2.stdout)
    # an epoch cut by the stop is logged in two pieces; compare the whole ones
    whole_a = {r["epoch"]: r for r in a}
    whole_b = {r["epoch"]: r for r in b if sum(x["epoch"] == r["epoch"] for x in b) == 1}
    assert sorted(whole_a) == [1, 2, 3, 4]
    expected_whole = [1, 2, 3, 4] if stop[0] == "--max-epoch" else [1, 3, 4]
    assert sorted(whole_b) == expected_whole
    for epoch in expected_whole:
        _same_record(whole_a[epoch], whole_b[epoch], "train")
    for ra, rb in zip(json_records(full.stdout, "valid")[-2:], json_records(part2.stdout, "valid")[-2:]):
        _same_record(ra, rb, "valid")
    weights = [float(whole_a[e]["bonus_weight"]) for e in (1, 4)]
    assert weights[0] < weights[1] <= 2.0  # the schedule really advanced
    ca, cb = _checkpoint(tmp_path / "full" / "checkpoint_last.pt"), _checkpoint(tmp_path / "part" / "checkpoint_last.pt")
    assert ca["optimizer_history"][-1]["num_updates"] == cb["optimizer_history"][-1]["num_updates"] == 36
    assert _max_diff(ca["model"], cb["model"]) <= 1e-6
    assert _max_diff(_optimizer_tensors(ca), _optimizer_tensors(cb)) <= 1e-6


def test_task_trains_exactly_like_stock_translation(data, tmp_path):
    """The batch pinning below changes nothing in an uninterrupted run: with
    the stock criterion, ``translation_encouraging`` and fairseq's
    ``translation`` log the same lines and end with the same parameters."""
    crit = ("--criterion", "label_smoothed_cross_entropy")
    opts = ["--label-smoothing", "0.1", "--max-epoch", "3"]
    stock = train(data, str(tmp_path / "stock"), opts, criterion=crit, task="translation")
    ours = train(data, str(tmp_path / "ours"), opts, criterion=crit)
    for ra, rb in zip(json_records(stock.stdout), json_records(ours.stdout), strict=True):
        _same_record(ra, rb, "train")
    assert _max_diff(_checkpoint(tmp_path / "stock" / "checkpoint_last.pt")["model"],
                     _checkpoint(tmp_path / "ours" / "checkpoint_last.pt")["model"]) == 0.0


def _length_dataset(n=120, seed=0):
    from fairseq.data import LanguagePairDataset

    from fairseq_helpers import make_task

    task = make_task()
    d = task.src_dict
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 9, (n,), generator=g)  # many equal lengths: the shuffle decides ties
    src = [torch.randint(d.nspecial, len(d), (int(k),), generator=g) for k in lengths]
    tgt = [torch.randint(d.nspecial, len(d), (int(k),), generator=g) for k in lengths]
    return LanguagePairDataset(src, lengths, d, tgt, lengths, d, shuffle=True)


def _batches(task, dataset, epoch, seed=3):
    itr = task.get_batch_iterator(dataset, max_tokens=64, seed=seed, epoch=epoch)
    return [list(map(int, b)) for b in itr.frozen_batches], itr


def test_batches_do_not_depend_on_the_epoch_a_process_starts_in():
    """Why a resume is exact: a process that starts at epoch 3 builds the same
    batches as one that started at epoch 1 and reused them (fairseq's own
    ``translation`` task sorts under seed + start epoch and so differs), and its
    iterator still continues at epoch 3."""
    from fairseq.tasks.translation import TranslationTask

    from fairseq_helpers import make_task

    dataset = _length_dataset()
    first, _ = _batches(make_task(), dataset, 1)
    resumed, itr = _batches(make_task(), dataset, 3)
    assert resumed == first
    assert itr.next_epoch_idx == 3 and itr.next_epoch_itr().n == 0 and itr.epoch == 3
    cfg = make_task().cfg

    def stock():
        return TranslationTask(cfg, dataset.src_dict, dataset.tgt_dict)

    assert _batches(stock(), dataset, 1)[0] == first
    stock_resumed = _batches(stock(), dataset, 3)[0]
    assert stock_resumed != first
    # where fairseq builds fresh batches anyway, the start epoch passes through
    fresh = make_task().get_batch_iterator(dataset, max_tokens=64, seed=3, epoch=3, disable_iterator_cache=True)
    assert [list(map(int, b)) for b in fresh.frozen_batches] == stock_resumed


def test_batches_with_update_ordered_indices_seed():
    """--update-ordered-indices-seed: the trainer passes seed + epoch, which
    also seeds the iterator's per-epoch shuffle; a process starting at epoch 3
    still gets epoch 1's batches and shuffle seed."""
    from fairseq_helpers import make_task

    dataset = _length_dataset(seed=1)
    first, itr1 = _batches(make_task(seed=3), dataset, 1, seed=3 + 1)
    resumed, itr3 = _batches(make_task(seed=3), dataset, 3, seed=3 + 3)
    assert resumed == first and itr3.seed == itr1.seed == 4 and itr3.next_epoch_idx == 3
    # and epoch 3 comes in the order an iterator that lived through epochs 1-2 gives
    for _ in range(2):
        for _ in itr1.next_epoch_itr():
            pass
    assert itr1.next_epoch_idx == 3

    def order(itr):
        return [b["id"].tolist() for b in itr.next_epoch_itr()]

    assert order(itr3) == order(itr1)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("fuse", [False, True], ids=["logits", "fused-projection"])
def test_fairseq_distributed_two_workers_equal_one_process(data, tmp_path, fuse):
    """fairseq's own distributed training on the CPU: two ``fairseq-train``
    workers (gloo, ``--ddp-backend legacy_ddp``, ranks given on the command
    line as for a manual multi-node launch; torchrun/spawn and the c10d
    backend assume GPUs in fairseq itself) against one process with
    ``--update-freq 2`` on the same global batches. Every logged train/valid
    value and the final parameters agree. Each worker imports the plugin
    itself through ``--user-dir``. Dropout is 0: fairseq seeds it per update,
    so a worker's mask would differ from the second micro-batch's."""
    opts = ["--label-smoothing", "0.1", "--log-end", "0.75", "--bonus-weight", "1", "--bonus-schedule", "linear",
            "--bonus-schedule-length", "30", "--dropout", "0", "--max-tokens", "600", "--max-epoch", "2",
            "--report-accuracy", *(["--el-fuse-projection"] if fuse else [])]
    dist = ["--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp", "--distributed-world-size", "2",
            "--distributed-init-method", f"tcp://127.0.0.1:{_free_port()}", "--distributed-no-spawn"]
    workers = [subprocess.Popen(train_command(data, str(tmp_path / "two"), [*opts, *dist, "--distributed-rank", str(r)]),
                                env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for r in range(2)]
    one = train(data, str(tmp_path / "one"), [*opts, "--update-freq", "2"])
    logs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "distributed init (rank 1)" in logs[1] and "distributed init (rank 0)" in logs[0]
    for kind in ("train", "valid"):
        a, b = json_records(one.stdout, kind), json_records(logs[0], kind)  # rank 0 logs the reduced values
        assert len(a) == len(b) == 2
        for ra, rb in zip(a, b):
            # validation is sharded too: per-step sizes (fairseq averages wpb, bsz,
            # total, n_correct per step) differ; every loss, metric and accuracy agrees
            _same_record(ra, rb, kind, skip=("wpb", "bsz", "total", "n_correct") if kind == "valid" else ())
    assert float(json_records(one.stdout)[-1]["num_updates"]) == 22  # 11 global batches per epoch
    drift = _max_diff(_checkpoint(tmp_path / "one" / "checkpoint_last.pt")["model"],
                      _checkpoint(tmp_path / "two" / "checkpoint_last.pt")["model"])
    assert drift <= 1e-5


def test_two_workers_equal_one_process(tmp_path):
    """torch.distributed (gloo, CPU) around the criterion alone, in memory:
    fairseq's data-parallel reduction (sum of logging outputs and of
    gradients) across two spawned workers equals one process on the whole
    batch, gradient for gradient (the fairseq-train test above checks the
    logs and the parameters that come out)."""
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
