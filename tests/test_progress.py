"""Bonus schedules follow fairseq's training progress under any task, with one
definition of t for training and validation."""
import json

import pytest

pytest.importorskip("fairseq")

from tests.helpers.cli import json_records, train  # noqa: E402
from tests.helpers.fairseq_objects import make_criterion, make_model, make_sample, make_task  # noqa: E402

T = 100  # schedule length in updates: far from saturating in these short runs


class _Opt:  # what FairseqTask.train_step / optimizer_step need of a fairseq optimizer
    def backward(self, loss):
        loss.backward()

    def step(self):
        pass


def _stock_translation_task():
    from fairseq.tasks.translation import TranslationConfig, TranslationTask

    ours = make_task()  # registers the plugin; reuse its dictionaries
    cfg = TranslationConfig(data="unused", source_lang="src", target_lang="tgt")
    return TranslationTask(cfg, ours.src_dict, ours.tgt_dict)


@pytest.mark.parametrize("which", ["translation", "translation_encouraging"])
def test_trainer_hooks_drive_the_schedule(which):
    """The calls fairseq's trainer makes, in its order, on fairseq's own task and on ours."""
    task = _stock_translation_task() if which == "translation" else make_task()
    model, sample = make_model(task), make_sample(task)
    crit = make_criterion(task, bonus_weight=2.0, bonus_schedule="linear", bonus_schedule_length=10)
    epoch_crit = make_criterion(task, bonus_schedule="cos", bonus_schedule_unit="epoch", bonus_schedule_length=4)
    seen = []
    task.begin_epoch(1, model)
    for upd in range(3):  # update_freq 2: two forward/backward passes share one update number
        for _ in range(2):
            task.train_step(sample, model, crit, _Opt(), upd)
            seen.append(crit.bonus_weight_now)
        task.optimizer_step(_Opt(), model, upd)
    assert seen == [0.0, 0.0, 0.2, 0.2, 0.4, 0.4]
    # validation after 3 applied updates sees t = 3, the t the next update trains with
    task.valid_step(sample, model, crit)
    assert crit.bonus_weight_now == pytest.approx(0.6)
    task.train_step(sample, model, crit, _Opt(), 20)  # a resumed run: fairseq's restored counter
    assert crit.bonus_weight_now == 2.0
    for epoch, want in ((1, 0.0), (3, 0.5), (5, 1.0)):
        task.begin_epoch(epoch, model)
        task.train_step(sample, model, epoch_crit, _Opt(), 0)
        assert epoch_crit.bonus_weight_now == pytest.approx(want)
        task.valid_step(sample, model, epoch_crit)  # an epoch's validation belongs to it
        assert epoch_crit.bonus_weight_now == pytest.approx(want)


def test_schedule_refused_where_nothing_reports_progress():
    from wce_fairseq.ops.bonus import ELConfigError

    task = make_task()

    class NoHooks:  # a task-like object fairseq's trainer could not drive
        source_dictionary = target_dictionary = task.tgt_dict

    with pytest.raises(ELConfigError, match="--task translation_encouraging"):
        make_criterion(NoHooks(), bonus_schedule="linear", bonus_schedule_length=10)
    assert make_criterion(NoHooks()).bonus_weight_now == 1.0  # a constant weight needs no progress


@pytest.fixture(scope="module")
def data(toy_data):
    return toy_data()


@pytest.fixture(scope="module")
def linear_run(data, tmp_path_factory):
    """``linear_run(task)``: fairseq-train under ``task`` with a linear
    schedule, two epochs, a log line per update: (its output, its save dir);
    one run per task, shared by the tests below."""
    runs = {}

    def get(task):
        if task not in runs:
            ck = tmp_path_factory.mktemp(f"linear-{task}")
            opts = ["--label-smoothing", "0.1", "--bonus-schedule", "linear", "--bonus-schedule-length", str(T),
                    "--max-epoch", "2", "--log-interval", "1"]
            runs[task] = (train(data, str(ck), opts, task=task).stdout, ck)
        return runs[task]

    return get


def _per_update(out):
    """fairseq's per-update (train_inner) records, by update."""
    recs = {}
    for line in out.splitlines():
        if "train_inner" in line and "{" in line:
            r = json.loads(line[line.index("{"):])
            recs[int(r["num_updates"])] = r
    return recs


@pytest.mark.slow
@pytest.mark.parametrize("task", ["translation", "translation_encouraging"])
def test_schedule_advances_through_fairseq_train(linear_run, task):
    out, _ = linear_run(task)
    tr, va = json_records(out), json_records(out, "valid")
    assert [r["epoch"] for r in tr] == [1, 2] and len(va) == 2
    # training: update u trains with t = u - 1 updates finished, so rho_t = (u - 1) / T, every update
    inner = _per_update(out)
    last = int(va[-1]["num_updates"])
    assert sorted(inner) == list(range(1, last + 1)) and last < T
    for u, r in inner.items():
        assert float(r["bonus_weight"]) == round((u - 1) / T, 4), u
    # validation: t = the updates finished when it runs
    for r_valid in va:
        assert float(r_valid["bonus_weight"]) == round(int(r_valid["num_updates"]) / T, 4)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["translation", "translation_encouraging"])
def test_fairseq_validate_scores_at_the_trained_bonus_weight(data, linear_run, task):
    """fairseq-validate rebuilds the criterion from a checkpoint, with no trainer
    to report progress: it must still score at the rho_t training left off at
    (the progress travels in the checkpoint's task state)."""
    from tests.helpers.cli import PLUGIN, run, tool

    out, ck = linear_run(task)
    last = json_records(out, "valid")[-1]
    k = int(last["num_updates"])
    v = run([tool("fairseq-validate"), data, "--user-dir", PLUGIN, "--task", task, "--path",
             str(ck / "checkpoint_last.pt"), "--cpu", "--max-tokens", "1200", "--log-format", "json"])
    line = [x for x in (v.stdout + v.stderr).splitlines() if '"valid_loss"' in x][-1]
    rec = json.loads(line[line.index("{"):])  # fairseq-validate's record has no epoch
    assert float(rec["valid_bonus_weight"]) == round(k / T, 4)
    assert float(rec["valid_loss"]) == pytest.approx(float(last["loss"]), abs=2e-3)  # the same loss as training's validation
