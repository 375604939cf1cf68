"""--task translation_encouraging: batches that do not depend on the epoch a
process starts in, hence exact resume; identical to fairseq's translation
task otherwise."""
import pytest
import torch

pytest.importorskip("fairseq")

from tests.helpers.cli import (at_once, in_background, json_records, load_checkpoint, max_diff,  # noqa: E402
                               optimizer_tensors, same_record, train)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(toy_data):
    return toy_data(n_train=300, n_valid=40, n_test=40, vocab=150)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    """``uninterrupted(schedule)``: four epochs without a stop, started in the
    background (a future of (output, save dir)); one run per schedule, shared
    by the resumed runs it is compared with."""
    runs = {}

    def get(schedule):
        if schedule not in runs:
            root = tmp_path_factory.mktemp(f"full-{schedule}")
            opts = [*resume_opts(schedule), "--max-epoch", "4"]
            runs[schedule] = in_background(lambda: (train(data, str(root), opts), root))
        return runs[schedule]

    return get


def resume_opts(schedule):
    return ["--label-smoothing", "0.1", "--log-end", "0.75", "--bonus-weight", "2", *RESUME_CASES[schedule]]


RESUME_CASES = {
    "epoch-linear": ["--bonus-schedule", "linear", "--bonus-schedule-unit", "epoch", "--bonus-schedule-length", "3"],
    "update-cos": ["--bonus-schedule", "cos", "--bonus-schedule-unit", "update", "--bonus-schedule-length", "25"],
}


def length_dataset(n=120, seed=0):
    from fairseq.data import LanguagePairDataset

    from tests.helpers.fairseq_objects import make_task

    task = make_task()
    d = task.src_dict
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 9, (n,), generator=g)  # many equal lengths: the shuffle decides ties
    src = [torch.randint(d.nspecial, len(d), (int(k),), generator=g) for k in lengths]
    tgt = [torch.randint(d.nspecial, len(d), (int(k),), generator=g) for k in lengths]
    return LanguagePairDataset(src, lengths, d, tgt, lengths, d, shuffle=True)


def batches(task, dataset, epoch, seed=3):
    itr = task.get_batch_iterator(dataset, max_tokens=64, seed=seed, epoch=epoch)
    return [list(map(int, b)) for b in itr.frozen_batches], itr





@pytest.mark.parametrize("schedule,stop", [
    ("epoch-linear", ("--max-epoch", "2")),
    ("update-cos", ("--max-epoch", "2")),
    ("update-cos", ("--max-update", "13")),  # stopped inside epoch 2 (9 updates per epoch)
], ids=["epoch-linear-after-epoch-2", "update-cos-after-epoch-2", "update-cos-mid-epoch-2"])
def test_resume_is_exact(data, tmp_path, uninterrupted, schedule, stop):
    """4 uninterrupted epochs == stop (after epoch 2, or at update 13 inside
    epoch 2) and resume from checkpoint_last.pt: the same per-epoch log lines
    (loss, nll, bonus, ρ_t, diagnostics, lr, update count) and the same final
    parameters and Adam state. Dropout stays on (0.1): fairseq reseeds it from
    the update count."""
    opts = resume_opts(schedule)
    full_run = uninterrupted(schedule)  # beside the two parts
    part1 = train(data, str(tmp_path / "part"), [*opts, *stop])
    part2 = train(data, str(tmp_path / "part"), [*opts, "--max-epoch", "4"])
    full, full_dir = full_run.result()
    assert "Loaded checkpoint" in part2.stdout + part2.stderr  # it really resumed
    a = json_records(full.stdout)
    b = json_records(part1.stdout) + json_records(part2.stdout)
    # an epoch cut by the stop is logged in two pieces; compare the whole ones
    whole_a = {r["epoch"]: r for r in a}
    whole_b = {r["epoch"]: r for r in b if sum(x["epoch"] == r["epoch"] for x in b) == 1}
    assert sorted(whole_a) == [1, 2, 3, 4]
    expected_whole = [1, 2, 3, 4] if stop[0] == "--max-epoch" else [1, 3, 4]
    assert sorted(whole_b) == expected_whole
    for epoch in expected_whole:
        same_record(whole_a[epoch], whole_b[epoch], "train")
    for ra, rb in zip(json_records(full.stdout, "valid")[-2:], json_records(part2.stdout, "valid")[-2:]):
        same_record(ra, rb, "valid")
    weights = [float(whole_a[e]["bonus_weight"]) for e in (1, 2, 3, 4)]
    if schedule == "epoch-linear":  # rho = 2 (e - 1) / 3 in epoch e
        assert weights == [round(2 * (e - 1) / 3, 4) for e in (1, 2, 3, 4)]
    else:  # cos over 25 updates of 9 a epoch: saturated (rho = 2) all through epoch 4, rising before
        assert weights[3] == 2.0 and weights[0] < weights[1] < weights[2] < 2.0
    ca, cb = load_checkpoint(full_dir / "checkpoint_last.pt"), load_checkpoint(tmp_path / "part" / "checkpoint_last.pt")
    assert ca["optimizer_history"][-1]["num_updates"] == cb["optimizer_history"][-1]["num_updates"] == 36
    assert max_diff(ca["model"], cb["model"]) <= 1e-6
    assert max_diff(optimizer_tensors(ca), optimizer_tensors(cb)) <= 1e-6


def test_task_trains_exactly_like_stock_translation(data, tmp_path):
    """The batch pinning below changes nothing in an uninterrupted run: with
    the stock criterion, ``translation_encouraging`` and fairseq's
    ``translation`` log the same lines and end with the same parameters."""
    crit = ("--criterion", "label_smoothed_cross_entropy")
    opts = ["--label-smoothing", "0.1", "--max-epoch", "3"]
    stock, ours = at_once(lambda: train(data, str(tmp_path / "stock"), opts, criterion=crit, task="translation"),
                          lambda: train(data, str(tmp_path / "ours"), opts, criterion=crit))
    for ra, rb in zip(json_records(stock.stdout), json_records(ours.stdout), strict=True):
        same_record(ra, rb, "train")
    assert max_diff(load_checkpoint(tmp_path / "stock" / "checkpoint_last.pt")["model"],
                     load_checkpoint(tmp_path / "ours" / "checkpoint_last.pt")["model"]) == 0.0


def test_batches_do_not_depend_on_the_epoch_a_process_starts_in():
    """Why a resume is exact: a process that starts at epoch 3 builds the same
    batches as one that started at epoch 1 and reused them (fairseq's own
    ``translation`` task sorts under seed + start epoch and so differs), and its
    iterator still continues at epoch 3."""
    from fairseq.tasks.translation import TranslationTask

    from tests.helpers.fairseq_objects import make_task

    dataset = length_dataset()
    first, _ = batches(make_task(), dataset, 1)
    resumed, itr = batches(make_task(), dataset, 3)
    assert resumed == first
    assert itr.next_epoch_idx == 3 and itr.next_epoch_itr().n == 0 and itr.epoch == 3
    cfg = make_task().cfg

    def stock():
        return TranslationTask(cfg, dataset.src_dict, dataset.tgt_dict)

    assert batches(stock(), dataset, 1)[0] == first
    stock_resumed = batches(stock(), dataset, 3)[0]
    assert stock_resumed != first
    # where fairseq builds fresh batches anyway, the start epoch passes through
    fresh = make_task().get_batch_iterator(dataset, max_tokens=64, seed=3, epoch=3, disable_iterator_cache=True)
    assert [list(map(int, b)) for b in fresh.frozen_batches] == stock_resumed


def test_batches_with_update_ordered_indices_seed():
    """--update-ordered-indices-seed: the trainer passes seed + epoch, which
    also seeds the iterator's per-epoch shuffle; a process starting at epoch 3
    still gets epoch 1's batches and shuffle seed."""
    from tests.helpers.fairseq_objects import make_task

    dataset = length_dataset(seed=1)
    first, itr1 = batches(make_task(seed=3), dataset, 1, seed=3 + 1)
    resumed, itr3 = batches(make_task(seed=3), dataset, 3, seed=3 + 3)
    assert resumed == first and itr3.seed == itr1.seed == 4 and itr3.next_epoch_idx == 3
    # and epoch 3 comes in the order an iterator that lived through epochs 1-2 gives
    for _ in range(2):
        for _ in itr1.next_epoch_itr():
            pass
    assert itr1.next_epoch_idx == 3

    def order(itr):
        return [b["id"].tolist() for b in itr.next_epoch_itr()]

    assert order(itr3) == order(itr1)
