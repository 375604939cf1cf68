"""The compatibility checks of scripts/compat.sh, run by one environment's
Python (3.8 and up: no newer syntax here). Each check prints one line and the
results go to a JSON file that compat.sh turns into the matrix.

    python scripts/compat/checks.py --name NAME --out results.json [--work DIR]
"""
import argparse
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

T = 100  # schedule length (updates) for the schedule check


def _versions():
    import fairseq
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__.split("+")[0],
            "fairseq": getattr(fairseq, "__version__", "?")}


def check_import():
    import fairseq  # noqa: F401
    from fairseq.criterions import CRITERION_REGISTRY
    from fairseq.tasks import TASK_REGISTRY

    import wce_fairseq

    wce_fairseq.register()
    assert "encouraging_ce" in CRITERION_REGISTRY and "translation_encouraging" in TASK_REGISTRY
    from wce_fairseq import fairseq_compat

    applied = {"BetterTransformer": fairseq_compat.needs_bt_fix(),
               "broadcast": fairseq_compat.needs_broadcast_fix(),
               "numpy compat": bool(fairseq_compat.give_fairseq_numpy_compat())}
    notes = [f"{name} fix active" for name, on in applied.items() if on]
    if importlib.util.find_spec("transformers") is None:
        # the plugin and its suite below without the [hf] extra
        from wce_fairseq.integrations.hf import encouraging_loss_func

        encouraging_loss_func(label_smoothing=0.1, log_end=0.5)
        notes.append("no transformers installed")
    return ", ".join(notes)


def check_train_resume_generate(ctx):
    from tests.helpers.cli import PLUGIN, json_records, run, tool, train

    ck = os.path.join(ctx["work"], "ck")
    el = ["--label-smoothing", "0.1", "--log-end", "0.5"]
    recs = json_records(train(ctx["data"], ck, el + ["--max-epoch", "2"]).stdout)
    assert [r["epoch"] for r in recs] == [1, 2], recs
    assert "bonus" in recs[-1] and "margin" in recs[-1]
    p = train(ctx["data"], ck, el + ["--max-epoch", "3"])
    assert "(epoch 3 @" in p.stdout, "did not resume from checkpoint_last.pt"
    assert [r["epoch"] for r in json_records(p.stdout)] == [3]
    gen = run([tool("fairseq-generate"), ctx["data"], "--user-dir", PLUGIN, "--task", "translation_encouraging",
               "--path", os.path.join(ck, "checkpoint_last.pt"), "--beam", "2", "--batch-size", "32", "--cpu",
               "--remove-bpe", "sentencepiece"])
    m = re.search(r"BLEU4? = [\d.]+", gen.stdout + gen.stderr)
    assert m, "fairseq-generate printed no BLEU"
    return "2 epochs, resumed to 3, generate: " + m.group(0)


def check_schedule_any_task(ctx):
    from tests.helpers.cli import json_records, train

    opts = ["--label-smoothing", "0.1", "--bonus-schedule", "linear", "--bonus-schedule-length", str(T),
            "--max-epoch", "1"]
    p = train(ctx["data"], os.path.join(ctx["work"], "sched"), opts, task="translation")
    va = json_records(p.stdout, "valid")[-1]
    k = int(va["num_updates"])
    got = float(va["bonus_weight"])
    assert abs(got - k / T) < 5e-5, (got, k)
    return "--task translation: valid rho_t %.4f after %d updates" % (got, k)


def check_editable_install(ctx):
    """What the README tells users to run must not replace their torch or fairseq."""
    before = _versions()
    p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", REPO],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    code = "import json, torch, fairseq, wce_fairseq; print(json.dumps([torch.__version__, fairseq.__version__]))"
    now = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    cwd=ctx["work"], check=True).stdout.strip().splitlines()[-1])
    assert now[0].split("+")[0] == before["torch"] and now[1] == before["fairseq"], (before, now)
    return "torch %s, fairseq %s kept" % (before["torch"], before["fairseq"])


# the command-line tests of the plugin's fixes for fairseq itself (marked slow, so not in the run above)
FIXES_THROUGH_THE_COMMAND_LINE = [
    "tests/cli/test_reliability.py::test_fairseq_distributed_run_resumes_with_default_flags",
    "tests/cli/test_language_modeling.py",
    "tests/cli/test_cli.py::test_from_pretrained_in_either_import_order",
    "tests/tools/test_score.py::test_refuses_a_test_set_translated_in_part",
]


def check_tests(ctx, selection=("-m", "not slow", "tests")):
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection]
    p = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=1800,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    tail = [ln for ln in p.stdout.strip().splitlines() if ln.strip()]
    summary = tail[-1] if tail else "(no output)"
    if p.returncode != 0:
        raise AssertionError(p.stdout[-3000:] + p.stderr[-2000:])
    return summary.strip("= ")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default=None, help="keep the toy data and checkpoints here (default: a temporary folder)")
    ap.add_argument("--skip-tests", action="store_true")
    a = ap.parse_args()
    if a.work:
        ok = run_checks(a, a.work)
    else:
        with tempfile.TemporaryDirectory(prefix="wce_compat_") as work:
            ok = run_checks(a, work)
    sys.exit(0 if ok else 1)


def run_checks(a, work) -> bool:
    results = {"name": a.name, "checks": []}
    ctx = {"work": work}

    def step(label, fn, *args):
        t0 = time.time()
        try:
            detail = fn(*args) or ""
            ok = True
        except Exception as e:  # a failed check is a result, not a crash
            ok, detail = False, "%s: %s" % (type(e).__name__, str(e).strip().splitlines()[-1] if str(e).strip() else "")
            traceback.print_exc()
        dt = time.time() - t0
        results["checks"].append({"check": label, "ok": ok, "seconds": round(dt, 1), "detail": detail})
        print("[compat %s] %-32s %s (%.0f s) %s" % (a.name, label, "PASS" if ok else "FAIL", dt, detail), flush=True)
        return ok

    try:
        results["versions"] = _versions()
    except Exception as e:
        results["versions"] = {"error": repr(e)}
    if step("import + register", check_import):
        from tests.helpers.cli import make_toy_data

        def data():
            ctx["data"] = make_toy_data(os.path.join(work, "toy"))
            return ""

        if step("toy data (spm + preprocess)", data):
            step("train 2 ep, resume, generate", check_train_resume_generate, ctx)
            step("schedule under --task translation", check_schedule_any_task, ctx)
        step("pip install -e . keeps torch", check_editable_install, ctx)
        if not a.skip_tests:
            step("tests (not slow)", check_tests, ctx)
            step("fairseq fixes, command line", check_tests, ctx, FIXES_THROUGH_THE_COMMAND_LINE)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=1)
    return all(c["ok"] for c in results["checks"])


if __name__ == "__main__":
    main()
