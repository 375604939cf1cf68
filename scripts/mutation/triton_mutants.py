"""Hand-written mutations of the Triton kernels (ops/triton_el.py), which a
mutation tool cannot reach inside ``@triton.jit`` code: each is a one-line
patch applied to a temporary copy of the repository, and the tests that run
the kernels (on the CPU interpreter) must fail on it.

    .venv/bin/python scripts/mutation/triton_mutants.py [--only NAME] [--keep]

Prints one line per mutant (killed, or SURVIVED with the tests' summary) and
a total; exits 1 if any survives.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KERNEL = "wce_fairseq/ops/triton_el.py"
TESTS = ["tests/ops/test_triton_el.py", "tests/ops/test_dispatch.py", "tests/test_functional.py",
         "tests/test_functional_precision.py", "-k", "triton"]

# name -> (the line as it is, the line mutated)
MUTANTS = {
    "loss scaled by 1.01": ("tl.store(loss_ptr + row, tl.where(keep, ce + bonus, 0.0))",
                            "tl.store(loss_ptr + row, tl.where(keep, (ce + bonus) * 1.01, 0.0))"),
    "tangent sign flipped": ("b = tl.log(1.0 - pc) - tl.maximum(p - le, 0.0) / (1.0 - le)",
                             "b = tl.log(1.0 - pc) + tl.maximum(p - le, 0.0) / (1.0 - le)"),
    "target kept in 1 - p_t's sum": ("d_t = d_t * rescale + tl.sum(tl.where(c == y, 0.0, e), 0)",
                                     "d_t = d_t * rescale + tl.sum(e, 0)"),
    "smoothing sum over the padded columns": ("sum_z += tl.sum(tl.where(c < V, x - z_t, 0.0), 0)",
                                              "sum_z += tl.sum(tl.where(c < V + 1, x - z_t, 0.0), 0)"),
    "best other includes the target": ("best_other = tl.maximum(best_other, tl.max(tl.where(c == y, -float(\"inf\"), x), 0))",
                                       "best_other = tl.maximum(best_other, tl.max(x, 0))"),
    "log p_t by subtraction": ("lp_t = tl.where(e_t > 1e-30, -_log1p(d_t / tl.maximum(e_t, 1e-30)), (z_t - m) - log_d)",
                               "lp_t = (z_t - m) - log_d"),
    "wrong argmax never fixed": ("col = tl.where(wrong, a, y)", "col = y"),
    "target gradient without the bonus": ("g_t = -omp_t + eps + rho * ((1.0 - lam) * d_y * omp_t - p_t * s_rest)",
                                          "g_t = -omp_t + eps"),
    "argmax gradient's S term": ("g_a = p_a - eps_i + rho * (lam_i * d_w * omp_a - p_a * (s_total - lam_i * d_w))",
                                 "g_a = p_a - eps_i + rho * (lam_i * d_w * omp_a - p_a * s_total)"),
    "coefficient without rho": ("tl.store(coef_ptr + row, 1.0 - rho * s_total)", "tl.store(coef_ptr + row, 1.0 - s_total)"),
    "backward smoothing offset unscaled": ("off = eps_i * sc", "off = eps_i"),
    "backward bonus term dropped": ("g += w_d * dd", "g += 0.0 * dd"),
    "ignored rows' gradient not zeroed": ("g = tl.where(sc != 0.0, g, 0.0)  # ignored rows: exactly 0, whatever their logits hold",
                                          "g = g"),
}


def run_one(name, before, after, keep):
    work = tempfile.mkdtemp(prefix="triton_mutant.")
    try:
        for entry in ("wce_fairseq", "tests", "requirements-test.txt", "pytest.ini", "examples"):
            src = os.path.join(REPO, entry)
            (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(work, entry))
        path = os.path.join(work, KERNEL)
        text = open(path, encoding="utf-8").read()
        if text.count(before) != 1:
            return "STALE", f"the line to mutate is not in {KERNEL} once: {before!r}"
        open(path, "w", encoding="utf-8").write(text.replace(before, after))
        env = dict(os.environ, PYTHONPATH=work, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
        p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TESTS],
                           cwd=work, env=env, capture_output=True, text=True)
        summary = (p.stdout.strip().splitlines() or [""])[-1]
        return ("killed" if p.returncode == 1 else "SURVIVED" if p.returncode == 0 else f"ERROR {p.returncode}"), summary
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="one mutant by name")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copies")
    a = ap.parse_args(argv)
    names = [a.only] if a.only else list(MUTANTS)
    results = {}
    for i, name in enumerate(names, 1):
        t0 = time.time()
        verdict, summary = run_one(name, *MUTANTS[name], a.keep)
        results[name] = verdict
        print(f"[{i}/{len(names)}] {verdict:<8} {name} ({time.time() - t0:.0f} s): {summary}", flush=True)
    killed = sum(v == "killed" for v in results.values())
    print(f"triton kernel mutants: {killed} of {len(results)} killed")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
