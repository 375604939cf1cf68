"""Run fairseq's command-line tools on tiny generated data."""
import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGIN = os.path.join(REPO, "wce_fairseq")
BIN = os.path.dirname(sys.executable)

TINY_MODEL = [
    "--arch", "transformer", "--share-all-embeddings",
    "--encoder-layers", "1", "--decoder-layers", "1",
    "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
    "--dropout", "0.1", "--optimizer", "adam", "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt",
    "--warmup-updates", "20", "--max-tokens", "1200", "--cpu", "--seed", "3",
    "--num-workers", "0", "--no-progress-bar", "--log-format", "json", "--log-interval", "1000",
    "--no-epoch-checkpoints",
]


def tool(name):
    return os.path.join(BIN, name)


def tool_env():
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                PATH=BIN + os.pathsep + os.environ.get("PATH", ""))  # the venv's tools, activated or not


# Rarely (about one fairseq-train process in 150, torch 2.13 with ve-fairseq) a
# process aborts at exit with this libstdc++ message after it has finished and
# written its checkpoints (a joinable std::thread destroyed during interpreter
# teardown, in a process that started no thread of the plugin's). Such a run is
# repeated once; a second abort fails the test.
_EXIT_ABORT = "terminate called without an active exception"


def run(args, cwd=None, check=True, timeout=600, env=None):
    """``args`` in a subprocess with the venv's tools (``env``: variables to add)."""
    environ = {**tool_env(), **(env or {})}
    p = subprocess.run(args, cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout)
    if p.returncode == -6 and _EXIT_ABORT in p.stderr:
        print(f"[tests.helpers.cli] {os.path.basename(args[0])} aborted at exit ({_EXIT_ABORT!r}); running it once more")
        p = subprocess.run(args, cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def train_command(data, save_dir, extra=(), criterion=("--criterion", "encouraging_ce"), user_dir=PLUGIN,
                  task="translation_encouraging"):
    return [tool("fairseq-train"), data, "--user-dir", user_dir, "--task", task, *criterion,
            "--save-dir", save_dir, *TINY_MODEL, *extra]


def train(data, save_dir, extra=(), criterion=("--criterion", "encouraging_ce"), check=True, cwd=None,
          user_dir=PLUGIN, task="translation_encouraging"):
    return run(train_command(data, save_dir, extra, criterion, user_dir, task), check=check, cwd=cwd)


def at_once(*calls):
    """Independent calls (each a function of no argument, typically a
    ``run``/``train`` of one single-threaded process) side by side on the
    machine's cores; their results in order, the first failure raised."""
    with ThreadPoolExecutor(max_workers=max(1, min(len(calls), os.cpu_count() or 1))) as ex:
        return [f.result() for f in [ex.submit(c) for c in calls]]


def in_background(call) -> Future:
    """``call`` started on a thread of its own; ``.result()`` waits for it."""
    ex = ThreadPoolExecutor(max_workers=1)
    future = ex.submit(call)
    ex.shutdown(wait=False)
    return future


def json_records(text, kind="train"):
    """fairseq's per-epoch json log records of one kind (train / valid)."""
    from wce_fairseq.tools.plots import parse_log_lines

    return parse_log_lines(text.splitlines())[kind]


def toy_corpus():
    """examples/quickstart/toy_corpus.py, the quickstart's synthetic corpus, as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("toy_corpus", os.path.join(REPO, "examples", "quickstart",
                                                                             "toy_corpus.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_toy_data(root, n_train=600, n_valid=60, n_test=60, vocab=200):
    raw = os.path.join(root, "raw")
    toy_corpus().write_corpus(raw, n_train, n_valid, n_test, seed=7)
    run(["bash", os.path.join(REPO, "examples/common/binarize.sh"), "en", "ps", raw, root, str(vocab)],
        cwd=REPO)
    return os.path.join(root, "bin")


# log fields that measure speed, not training: they differ between any two runs
SPEED_KEYS = {"wps", "ups", "wall", "train_wall", "gb_free", "cuda_gb_allocated", "cuda_gb_reserved", "cuda_gb_free"}


def load_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def optimizer_tensors(ckpt):
    state = ckpt["last_optimizer_state"]["state"]
    return {f"{p}.{k}": v for p, entry in state.items() for k, v in entry.items() if torch.is_tensor(v)}


def same_record(ra, rb, what, skip=()):
    keys = set(ra) - SPEED_KEYS - set(skip)
    assert keys == set(rb) - SPEED_KEYS - set(skip), what
    for key in sorted(keys):
        assert ra[key] == rb[key], (what, ra["epoch"], key, ra[key], rb[key])


def start_up_error(data, flags, capsys):
    """What ``fairseq-train DATA --user-dir wce_fairseq --task translation_encouraging
    --criterion encouraging_ce TINY_MODEL FLAGS`` stops with at start-up, run in
    this process the way fairseq_cli.train does it up to the criterion (the
    command line parsed into its config, the user directory imported, the task
    set up, the model and the criterion built): the error's text, or None."""
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = [data, "--user-dir", PLUGIN, "--task", "translation_encouraging", "--criterion", "encouraging_ce",
            *TINY_MODEL, "--max-epoch", "1", *flags]
    try:
        args = options.parse_args_and_arch(options.get_training_parser(), argv)
        cfg = convert_namespace_to_omegaconf(args)
        utils.import_user_module(cfg.common)
        task = tasks.setup_task(cfg.task)
        task.build_model(cfg.model)
        task.build_criterion(cfg.criterion)
    except SystemExit:  # argparse: the message went to stderr
        return capsys.readouterr().err.strip().splitlines()[-1]
    except Exception as e:  # noqa: BLE001 - every start-up refusal is an exception
        return f"{type(e).__name__}: {e}"
    return None
