"""Bad configuration fails at start-up with a message naming the flag and
the allowed range: every case through fairseq's own start-up (parsing,
task, model, criterion) in this process; three of them through the
``fairseq-train`` command, which stops before the first batch and writes
nothing; and the same checks in the Python API."""
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fairseq")

from tests.helpers.cli import PLUGIN, TINY_MODEL, tool  # noqa: E402

# (flags, words the message must contain)
CASES = {
    "log_end_zero": (["--log-end", "0"], ["--log-end", "(0, 1]"]),
    "log_end_above_one": (["--log-end", "1.5"], ["--log-end", "(0, 1]"]),
    "negative_weight": (["--bonus-weight=-1"], ["--bonus-weight", ">= 0"]),
    "smoothing_one": (["--label-smoothing", "1.0"], ["--label-smoothing", "[0, 1)"]),
    "smoothing_negative": (["--label-smoothing=-0.1"], ["--label-smoothing", "[0, 1)"]),
    "bonus_smoothing": (["--bonus-smoothing", "1.5"], ["--bonus-smoothing", "[0, 1)"]),
    "power_without_gamma": (["--bonus", "power"], ["--bonus-gamma", "> 0"]),
    "power_gamma_zero": (["--bonus", "power", "--bonus-gamma", "0"], ["--bonus-gamma", "> 0"]),
    "start_one": (["--bonus-start", "1"], ["--bonus-start", "[0, 1)"]),
    "start_negative": (["--bonus-start=-0.2"], ["--bonus-start", "[0, 1)"]),
    "schedule_without_length": (["--bonus-schedule", "linear"], ["--bonus-schedule-length", "> 0"]),
    "schedule_zero_length": (["--bonus-schedule", "exp", "--bonus-schedule-length", "0"],
                             ["--bonus-schedule-length", "> 0"]),
    "exp_ratio": (["--bonus-schedule-exp-ratio", "0"], ["--bonus-schedule-exp-ratio", "> 0"]),
    "unknown_bonus": (["--bonus", "square"], ["--bonus", "log", "power", "cos", "none"]),
    "unknown_impl": (["--el-impl", "cuda"], ["--el-impl", "chunked", "triton"]),
    "impl_not_runnable": (["--el-impl", "triton"], ["--el-impl", "triton", "cannot run"]),
    # options that only act with another one, given without it
    "gamma_without_power": (["--bonus-gamma", "2"], ["--bonus-gamma", "--bonus power", "--bonus log"]),
    "log_end_without_log": (["--bonus", "cos", "--log-end", "0.75"], ["--log-end", "--bonus log", "--bonus cos"]),
    "length_without_schedule": (["--bonus-schedule-length", "4000"],
                                ["--bonus-schedule-length", "schedule", "--bonus-schedule constant"]),
    "unit_without_schedule": (["--bonus-schedule-unit", "epoch"], ["--bonus-schedule-unit", "schedule"]),
    "exp_ratio_without_exp": (["--bonus-schedule", "linear", "--bonus-schedule-length", "10",
                               "--bonus-schedule-exp-ratio", "3"], ["--bonus-schedule-exp-ratio", "exp"]),
    "weight_without_bonus": (["--bonus", "none", "--bonus-weight", "2"], ["--bonus-weight", "--bonus none"]),
    "schedule_without_bonus": (["--bonus", "none", "--bonus-schedule", "cos", "--bonus-schedule-length", "9"],
                               ["--bonus-schedule", "--bonus none"]),
}


# the cases also run through the fairseq-train command: a range, an option without effect,
# an implementation the machine cannot run (in a process without the Triton interpreter)
COMMAND_LINE = ("log_end_zero", "gamma_without_power", "impl_not_runnable")


@pytest.fixture(scope="module")
def data(toy_data):
    return toy_data(n_train=100, n_valid=20, n_test=20, vocab=120)


@pytest.mark.parametrize("name", [n for n in CASES if n not in COMMAND_LINE])
def test_start_up_refuses(data, capsys, name):
    from tests.helpers.cli import start_up_error

    flags, words = CASES[name]
    error = start_up_error(data, flags, capsys)
    assert error is not None, f"{flags} was accepted"
    for word in words:
        assert word in error, f"{word!r} not in the error: {error}"
    assert "nan" not in error.lower()


@pytest.fixture(scope="module")
def command_line(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")

    def launch(name):
        flags, _ = CASES[name]
        save = root / name
        env = dict(os.environ, OMP_NUM_THREADS="1", PATH=os.path.dirname(tool("python")) + os.pathsep + os.environ["PATH"])
        env.pop("TRITON_INTERPRET", None)  # a CPU-only machine cannot run the triton impl
        p = subprocess.run(
            [tool("fairseq-train"), data, "--user-dir", PLUGIN, "--task", "translation_encouraging",
             "--criterion", "encouraging_ce", "--save-dir", str(save), *TINY_MODEL, "--max-epoch", "1", *flags],
            capture_output=True, text=True, env=env, timeout=300)
        return name, p, save

    with ThreadPoolExecutor(max_workers=3) as ex:
        return {name: (p, save) for name, p, save in ex.map(launch, COMMAND_LINE)}


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMAND_LINE)
def test_fairseq_train_refuses(command_line, name):
    p, save = command_line[name]
    out = p.stdout + p.stderr
    assert p.returncode != 0, out[-2000:]
    last = out.strip().splitlines()[-1]
    for word in CASES[name][1]:
        assert word in last, f"{word!r} not in the final error line: {last}"
    assert "nan" not in last.lower()
    assert "begin training epoch" not in out  # before the first batch
    assert not (save.exists() and any(save.iterdir())), "a checkpoint was written"


@pytest.mark.parametrize("kw, words", [
    (dict(log_end=0.0), ["log_end", "(0, 1]"]),
    (dict(bonus_weight=float("nan")), ["bonus_weight"]),
    (dict(bonus_weight=float("inf")), ["bonus_weight"]),
    (dict(label_smoothing=1.0), ["label_smoothing"]),
    (dict(bonus="power"), ["bonus_gamma"]),
    (dict(bonus="power", bonus_gamma=-1.0), ["bonus_gamma"]),
    (dict(bonus_start=1.0), ["bonus_start"]),
    (dict(bonus="exp"), ["bonus"]),
    (dict(reduction="avg"), ["reduction"]),
    (dict(impl="cuda"), ["impl"]),
    (dict(bonus_gamma=2.0), ["bonus_gamma", "power"]),
    (dict(bonus="cos", log_end=0.75), ["log_end", "log"]),
    (dict(bonus="none", bonus_start=0.5), ["bonus_start", "none"]),
    (dict(bonus="none", bonus_smoothing=0.1), ["bonus_smoothing", "none"]),
])
def test_python_api_refuses(kw, words):
    import torch

    from wce_fairseq.functional import encouraging_loss
    from wce_fairseq.modules import EncouragingLoss
    from wce_fairseq.ops.bonus import ELConfigError

    with pytest.raises(ELConfigError) as e:
        encouraging_loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), **kw)
    for w in words:
        assert w in str(e.value)
    with pytest.raises(ELConfigError):
        EncouragingLoss(**kw)  # the module refuses at construction


@pytest.mark.slow
@pytest.mark.parametrize("task, arch", [("translation", "lstm"), ("translation_encouraging", "fconv")])
def test_fused_projection_refused_before_the_first_batch(data, tmp_path, task, arch):
    """--el-fuse-projection on a model without a plain output projection stops
    before fairseq iterates over samples, with a clean exit, under fairseq's own
    task too (where only the trainer's hooks hand the criterion the model)."""
    small = {"lstm": ["--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-hidden-size", "16",
                      "--decoder-hidden-size", "16", "--decoder-out-embed-dim", "16"],
             "fconv": ["--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--decoder-out-embed-dim", "16",
                       "--encoder-layers", "[(16,3)]", "--decoder-layers", "[(16,3)]"]}[arch]
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=os.path.dirname(tool("python")) + os.pathsep + os.environ["PATH"])
    p = subprocess.run(
        [tool("fairseq-train"), data, "--user-dir", PLUGIN, "--task", task, "--criterion", "encouraging_ce",
         "--el-fuse-projection", "--arch", arch, *small, "--optimizer", "adam", "--lr", "1e-3", "--max-tokens",
         "500", "--cpu", "--max-epoch", "1", "--save-dir", str(tmp_path / "ck"), "--no-progress-bar"],
        capture_output=True, text=True, env=env, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out[-2000:]  # an exception, not an abort
    assert "--el-fuse-projection cannot be used with" in out.strip().splitlines()[-1]
    assert "Start iterating over samples" not in out
