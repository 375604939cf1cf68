"""One prepared GPU check that fits four minutes on one H100/H200:

1. self-check and correctness: the Triton kernels (compiled on the device)
   against the float64 reference for fp32, bf16 and fp16 logits, N = 16384,
   V = 32000 and 128000, realistic rows, padding, an upstream gradient of
   2^16 (rows are independent: a sample of rows is compared entry by entry);
2. no host synchronisation: forward + backward of Triton, chunked and the
   fused projection under ``torch.cuda.set_sync_debug_mode("error")``;
3. loss timing, bf16, forward + backward: fairseq's stock label-smoothed CE
   as fairseq runs it, chunked, Triton (offline launch configuration and
   autotuned), the fused projection; time, extra memory, the bytes the model
   says each moves against four passes over the logits at the measured copy
   bandwidth;
4. fairseq-train words/s, --fp16 and --bf16, stock vs EL (skipped where
   fairseq is not installed).

    python benchmarks/gpu_check.py                  # prints its time budget, then runs (exit 1 on a failed check)
    python benchmarks/gpu_check.py --budget         # only the budget
    python benchmarks/gpu_check.py --smoke          # tiny sizes, any device: checks the script itself

The budget is each part's fixed cost (process start-up, compiles: measured by
the --smoke run on the CPU, ``SMOKE_FIXED_S``, or ``--budget-from`` a smoke
run's JSON) plus its work scaled by the sizes at ``ASSUMED`` device rates.
Output: Markdown tables and ``--out``/gpu_check.json.
"""
import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import common
import torch
from common import EPS, LE, PAD, REPO

PARTS = ("correctness", "no host syncs", "loss timing", "fairseq-train")
# Each part's cost at the --smoke sizes, measured by
# `python benchmarks/gpu_check.py --smoke` on the CPU machine (2 cores,
# torch 2.13.0, triton 3.9.0) on 2026-12-01: start-up, compiles, processes.
SMOKE_FIXED_S = {"correctness": 0.8, "no host syncs": 0.0, "loss timing": 2.7, "fairseq-train": 21.8}
# What the work is scaled by: an H100-class GPU, conservatively (a third
# below its bandwidth, a fifth of its dense bf16 rate), plus CUDA start-up
ASSUMED = {"bandwidth_Bps": 2.5e12, "train_flops": 2.0e14, "triton_compile_s": 2.0, "cuda_init_s": 10.0}
LIMIT_S = 240.0


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Plan:
    def __init__(self, smoke: bool, updates: int, repeats: int, hidden: int):
        self.smoke = smoke
        self.sizes = [(64, 3000)] if smoke else [(16384, 32000), (16384, 128000)]
        self.dtypes = [torch.float32, torch.bfloat16, torch.float16]
        self.sample = 16 if smoke else 256
        self.repeats = 2 if smoke else repeats
        self.updates = 4 if smoke else updates
        self.hidden = 64 if smoke else hidden
        self.train_tokens = 1000 if smoke else 16384

    def budget(self, fixed):
        """Seconds per part: fixed costs plus work at the assumed rates."""
        fixed = {p: fixed.get(p, SMOKE_FIXED_S[p]) for p in PARTS}
        if self.smoke:
            return fixed
        bw = ASSUMED["bandwidth_Bps"]
        nv = sum(N * V for N, V in self.sizes)
        comp = ASSUMED["triton_compile_s"] * 2 * len(self.dtypes)  # two kernels per dtype
        # the smoke run trains 2 systems on the CPU; a GPU run 4 (2 precisions), each starting CUDA and
        # compiling its self-check's kernels (fp32 and fp16)
        runs = 4
        per_run = fixed["fairseq-train"] / 2 + ASSUMED["cuda_init_s"] + 4 * ASSUMED["triton_compile_s"]
        return {
            # CUDA start-up, the compiles, making the logits (~12 bytes an entry) and four passes, per dtype
            "correctness": fixed["correctness"] + ASSUMED["cuda_init_s"] + comp + len(self.dtypes) * nv * 40 / bw,
            "no host syncs": fixed["no host syncs"] + 2 * ASSUMED["triton_compile_s"] + 3 * nv * 20 / bw,
            # per call the providers together move ~80 bytes per logit (stock ~24, chunked ~16, ...)
            "loss timing": fixed["loss timing"] + comp + (self.repeats + 3) * nv * 80 / bw,
            # `updates` steps of a 63M-parameter Transformer on 16k tokens, per run
            "fairseq-train": runs * (per_run + self.updates * 6 * 63e6 * self.train_tokens / ASSUMED["train_flops"]),
        }


def print_budget(budget):
    total = sum(budget.values())
    log("[budget] " + ", ".join(f"{p} {s:.0f} s" for p, s in budget.items()) + f"; total {total:.0f} s "
        f"(limit {LIMIT_S:.0f} s)")
    return total


# -- 1. correctness ---------------------------------------------------------------------
def check_correctness(device, plan):
    from wce_fairseq.functional import encouraging_loss, self_check
    from wce_fairseq.ops.bonus import BonusSpec
    from wce_fairseq.ops.reference import reference_forward

    impl = "triton" if device.type == "cuda" else "chunked"
    reason = self_check(impl, device)
    rows = [{"check": f"self-check ({impl} on {device})", "ok": reason is None,
             "detail": reason or "agrees with its float64 check", "reason": reason}]
    spec = BonusSpec(label_smoothing=EPS, log_end=LE)
    up = 2.0 ** 16
    for N, V in plan.sizes:
        for dt in plan.dtypes:
            t0 = time.time()
            z, t = common.make_logits("realistic", N, V, device, dt)
            x = z.clone().requires_grad_(True)
            loss = encouraging_loss(x, t, label_smoothing=EPS, log_end=LE, reduction="sum", impl=impl,
                                    ignore_index=PAD)
            loss.backward(torch.tensor(up, device=device))
            idx = torch.randperm(N, generator=torch.Generator().manual_seed(1))[:plan.sample].to(device)
            zr = z.index_select(0, idx).double().requires_grad_(True)
            ref = reference_forward(zr, t.index_select(0, idx), spec, PAD, "sum", False)
            (ref.loss * up).backward()
            verdict = _compare_gradient(x.grad.index_select(0, idx), zr, dt, up, V)
            with torch.no_grad():
                lt = encouraging_loss(z.index_select(0, idx), t.index_select(0, idx), label_smoothing=EPS,
                                      log_end=LE, reduction="sum", impl=impl, ignore_index=PAD)
            lerr = abs(lt.item() - ref.loss.item()) / max(1.0, abs(ref.loss.item()))
            ok = verdict["ok"] and lerr <= 1e-5
            rows.append({"check": f"{impl} {N}x{V} {str(dt)[6:]}", "ok": ok,
                         "detail": f"{verdict['detail']}; loss rel err {lerr:.1e}; {time.time() - t0:.1f} s",
                         "loss_rel_err": lerr, **verdict["counts"]})
            log(f"[correctness] {rows[-1]['check']}: {'PASS' if ok else 'FAIL'}")
            del z, x, loss, zr
    return rows


def _compare_gradient(got, zr, dt, up, V):
    """Nothing non-finite or flushed where the scaled-then-cast reference is
    not, every entry within one rounding plus fp32's error on its terms."""
    exact = zr.grad
    cast = exact.to(dt)
    fin = torch.isfinite(cast)
    nonfinite = int((~torch.isfinite(got) & fin).sum())
    with torch.no_grad():
        terms = exact.abs() + up * (torch.softmax(zr.detach(), -1) + 2 * EPS / (V - 1))
    slack = 2.0 ** -20 * terms
    fi = torch.finfo(dt)
    sub = fi.eps * fi.tiny
    flushed = int(((got == 0) & (cast != 0) & (exact.abs() > sub / 2 + slack)).sum())
    err = (got.double() - exact).abs()
    beyond = int(((err > fi.eps * exact.abs() + sub + slack) & fin).sum())
    worst = (err[fin].max() / exact[fin].abs().max()).item()
    return {"ok": nonfinite == 0 and flushed == 0 and beyond == 0,
            "counts": {"beyond_one_rounding": beyond, "non_finite": nonfinite, "extra_flushes": flushed},
            "detail": f"max grad err {worst:.1e} of its largest entry; {beyond} beyond one rounding, "
                      f"{nonfinite} non-finite, {flushed} extra flushes (upstream 2^16, {got.shape[0]} rows)"}


# -- 2. no host syncs ----------------------------------------------------------------------
def check_no_syncs(device, plan):
    from wce_fairseq.functional import encouraging_loss_parts
    from wce_fairseq.ops.bonus import BonusSpec
    from wce_fairseq.ops.fused_linear import fused_linear_encouraging_loss

    if device.type != "cuda":
        return [{"check": "no host syncs", "ok": True, "detail": "needs CUDA (the CPU suite counts them instead)"}]
    spec = BonusSpec(label_smoothing=EPS, log_end=LE)
    N, V = plan.sizes[0]
    z, t = common.make_logits("realistic", N, V, device, torch.bfloat16)
    h = torch.randn(N, plan.hidden, device=device, dtype=torch.bfloat16)
    w = torch.randn(V, plan.hidden, device=device, dtype=torch.bfloat16) * plan.hidden ** -0.5

    def logits_path(impl):
        x = z.clone().requires_grad_(True)
        res = encouraging_loss_parts(x, t, spec, ignore_index=PAD, reduction="sum", impl=impl, want_stats=True,
                                     inplace_backward=True)
        res.loss.backward(torch.tensor(1024.0, device=device))

    def fused(impl):
        hx, wx = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
        fused_linear_encouraging_loss(hx, wx, None, t, spec, ignore_index=PAD, want_stats=True,
                                      impl=impl).loss.backward()

    rows = []
    for name, fn, impl in (("triton", logits_path, "triton"), ("chunked", logits_path, "chunked"),
                           ("fused projection (triton)", fused, "triton")):
        fn(impl)  # compiles and caches first
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            fn(impl)
            ok, detail = True, "forward + backward under set_sync_debug_mode('error')"
        except RuntimeError as e:
            ok, detail = False, str(e).splitlines()[0]
        finally:
            torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()
        rows.append({"check": f"no host syncs: {name}", "ok": ok, "detail": detail})
        log(f"[syncs] {name}: {'PASS' if ok else 'FAIL'}")
    return rows


# -- 3. loss timing --------------------------------------------------------------------------
def copy_bandwidth(device, nbytes):
    if device.type != "cuda":
        return float("nan")
    a = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    torch.cuda.synchronize()
    return 2 * a.numel() * 2 * 10 / (time.perf_counter() - t0)  # read + write


# passes over the N x V logits each provider makes in device memory, from the code path
PASSES = {"triton": 4, "triton (autotuned)": 4, "chunked": 3, "fused": 0}


def time_loss(device, plan):
    providers = ["stock_ls_ce", "chunked"] + (["triton", "triton (autotuned)"] if device.type == "cuda" else [])
    bw = copy_bandwidth(device, 2 * 2**30)
    out = []
    for N, V in plan.sizes:
        for prov in providers + ["fused"]:
            if prov == "fused":
                t, m = _time_fused(device, N, V, plan.hidden, torch.bfloat16, plan.repeats)
            else:
                os.environ["WCE_TRITON_AUTOTUNE"] = "1" if prov == "triton (autotuned)" else "0"
                t, m = common.measure(prov.split()[0], N, V, "fwd+bwd", "bfloat16", device.type, plan.repeats,
                                      torch.get_num_threads(), logits_kind="realistic")
            passes = PASSES.get(prov)
            out.append({"N": N, "V": V, "provider": prov, "time_s": t, "extra_bytes": m, "passes": passes,
                        "model_bytes": None if passes is None else passes * N * V * 2})
            log(f"[timing] {prov} {N}x{V}: {1e3 * t:.2f} ms")
        out.append({"N": N, "V": V, "provider": "4 passes at copy bandwidth", "time_s": 4 * N * V * 2 / bw,
                    "extra_bytes": 0, "passes": 4, "model_bytes": 4 * N * V * 2})
    os.environ.pop("WCE_TRITON_AUTOTUNE", None)
    for r in out:
        base = next(b for b in out if b["provider"] == "stock_ls_ce" and (b["N"], b["V"]) == (r["N"], r["V"]))
        four = next(b for b in out if b["provider"].startswith("4 passes") and (b["N"], b["V"]) == (r["N"], r["V"]))
        r["time_x_stock"] = r["time_s"] / base["time_s"]
        r["time_x_four_passes"] = r["time_s"] / four["time_s"] if four["time_s"] == four["time_s"] else float("nan")
        r["mem_x_stock"] = r["extra_bytes"] / base["extra_bytes"] if base["extra_bytes"] else float("nan")
    return out, bw


def _time_fused(device, N, V, D, dtype, repeats):
    """The fused projection: hidden states and weight in, no logits. Its extra
    memory is measured above its inputs, as the others' is above theirs."""
    from wce_fairseq.ops.bonus import BonusSpec
    from wce_fairseq.ops.fused_linear import fused_linear_encouraging_loss

    g = torch.Generator().manual_seed(0)
    h = (torch.randn(N, D, generator=g) * 0.5).to(device=device, dtype=dtype)
    w = (torch.randn(V, D, generator=g) * 0.05).to(device=device, dtype=dtype)
    t = torch.randint(0, V, (N,), generator=g).to(device)
    spec = BonusSpec(label_smoothing=EPS, log_end=LE)

    def once():
        hx, wx = h.detach().requires_grad_(True), w.detach().requires_grad_(True)
        fused_linear_encouraging_loss(hx, wx, None, t, spec, ignore_index=PAD, reduction="sum").loss.backward()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    once()
    sync()
    extra = float("nan")
    if device.type == "cuda":
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        once()
        sync()
        extra = torch.cuda.max_memory_allocated() - base
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        once()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), extra


# -- 4. fairseq-train -----------------------------------------------------------------------
def train_wps(device, plan, work):
    try:
        import fairseq  # noqa: F401
    except ImportError:
        return None, "fairseq is not installed in this Python; install it (docs/installation.md) to run this part"
    vocab = 256 if plan.smoke else 32000
    data = common.synthetic_data(os.path.join(work, "data"), vocab, 200 if plan.smoke else 5000,
                                 12 if plan.smoke else 40)
    model = (["--arch", "transformer", "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32",
              "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
              "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]
             if plan.smoke else ["--arch", "transformer"])
    common_args = ["--share-all-embeddings", "--optimizer", "adam", "--lr", "5e-4", "--lr-scheduler", "inverse_sqrt",
                   "--warmup-updates", "100", "--no-save", "--disable-validation", "--log-format", "simple",
                   "--log-interval", "1" if plan.smoke else "10", "--seed", "1", "--num-workers", "2",
                   "--max-tokens", str(plan.train_tokens), "--max-update", str(plan.updates),
                   "--user-dir", os.path.join(REPO, "wce_fairseq"), "--task", "translation_encouraging"]
    if device.type != "cuda":
        common_args.append("--cpu")
    systems = {"stock LS-CE": ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"],
               "EL": ["--criterion", "encouraging_ce", "--label-smoothing", "0.1", "--log-end", "0.5"]}
    precisions = {"fp16": ["--fp16"], "bf16": ["--bf16"]} if device.type == "cuda" else {"fp32 (cpu)": []}
    tool = os.path.join(os.path.dirname(sys.executable), "fairseq-train")
    tool = tool if os.path.exists(tool) else "fairseq-train"
    rows = []
    for prec, pflags in precisions.items():
        for name, crit in systems.items():
            p = subprocess.run([tool, data, *model, *common_args, *crit, *pflags], capture_output=True, text=True)
            if p.returncode:
                rows.append({"precision": prec, "criterion": name, "wps": float("nan"),
                             "detail": (p.stdout + p.stderr)[-600:]})
                log(f"[train] {prec} {name} FAILED")
                continue
            vals = [float(v) for v in re.findall(r"train_inner \|.*?wps=([\d.]+)", p.stdout)]
            wps = statistics.mean(vals[1:]) if len(vals) > 1 else (vals[0] if vals else float("nan"))
            impl = re.search(r"loss implementation (\w+)", p.stdout + p.stderr)
            rows.append({"precision": prec, "criterion": name, "wps": wps,
                         "detail": "impl %s" % impl.group(1) if impl else ""})
            log(f"[train] {prec} {name}: {wps:.0f} words/s")
    for r in rows:
        base = next(b for b in rows if b["precision"] == r["precision"] and b["criterion"] == "stock LS-CE")
        r["x_stock"] = r["wps"] / base["wps"]
    return rows, None


# -- the run ---------------------------------------------------------------------------------
def print_tables(result, plan):
    print(f"\n## {result['device']}, torch {result['torch']} ({result['seconds']:.0f} s; "
          f"budget {sum(result['budget_s'].values()):.0f} s)\n")
    print("| part | seconds | budget |\n|---|---:|---:|")
    for p in PARTS:
        print(f"| {p} | {result['part_s'].get(p, float('nan')):.1f} | {result['budget_s'][p]:.0f} |")
    print("\n| check | result | detail |\n|---|---|---|")
    for r in result["correctness"] + result["syncs"]:
        print(f"| {r['check']} | {'PASS' if r['ok'] else 'FAIL'} | {r['detail']} |")
    print(f"\nloss from logits, bf16, forward + backward, median of {plan.repeats}; "
          f"copy bandwidth {result['copy_bandwidth_GBps']:.0f} GB/s\n")
    print("| N x V | provider | ms | x stock | x 4 passes | extra MiB | x stock | model: passes (GB) |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in result["timing"]:
        model = "—" if r["passes"] is None else f"{r['passes']} ({r['model_bytes'] / 1e9:.2f})"
        print(f"| {r['N']} x {r['V']} | {r['provider']} | {1e3 * r['time_s']:.2f} | {r['time_x_stock']:.2f} | "
              f"{r['time_x_four_passes']:.2f} | {r['extra_bytes'] / 2**20:.0f} | {r['mem_x_stock']:.2f} | {model} |")
    if result["train"]:
        print(f"\nfairseq-train, {plan.updates} updates: words/s\n")
        print("| precision | criterion | words/s | x stock | |\n|---|---|---:|---:|---|")
        for r in result["train"]:
            print(f"| {r['precision']} | {r['criterion']} | {r['wps']:.0f} | {r['x_stock']:.3f} | "
                  f"{r['detail'][:120].replace(chr(10), ' ')} |")
    else:
        print(f"\nfairseq-train: {result['train_skipped']}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    ap.add_argument("--updates", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=1024, help="hidden size for the fused projection")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on any device: checks the script runs")
    ap.add_argument("--budget", action="store_true", help="print the time budget of the run and stop")
    ap.add_argument("--budget-from", help="a --smoke run's gpu_check.json: its measured fixed costs")
    ap.add_argument("--force", action="store_true", help="run even if the budget is over the limit")
    a = ap.parse_args(argv)
    plan = Plan(a.smoke, a.updates, a.repeats, a.hidden)
    fixed = json.load(open(a.budget_from))["part_s"] if a.budget_from else {}
    budget = plan.budget(fixed)
    if a.skip_train:
        budget["fairseq-train"] = 0.0
    total = print_budget(budget)
    if a.budget:
        print(json.dumps({"budget_s": budget, "total_s": total, "limit_s": LIMIT_S}))
        return
    if total > LIMIT_S and not a.force:
        sys.exit(f"gpu_check: the budget ({total:.0f} s) is over {LIMIT_S:.0f} s; lower --updates/--repeats "
                 "or pass --force")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not a.smoke and device.type != "cuda":
        sys.exit("gpu_check: no CUDA device here (use --smoke to check the script on the CPU)")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    log(f"[gpu_check] {name}, torch {torch.__version__}")
    result = {"device": name, "torch": torch.__version__, "budget_s": budget, "part_s": {}}
    t_start = time.time()

    def part(key, fn):
        t0 = time.time()
        out = fn()
        result["part_s"][key] = time.time() - t0
        return out

    result["correctness"] = part("correctness", lambda: check_correctness(device, plan))
    result["syncs"] = part("no host syncs", lambda: check_no_syncs(device, plan))
    result["timing"], bw = part("loss timing", lambda: time_loss(device, plan))
    result["copy_bandwidth_GBps"] = bw / 1e9
    if a.skip_train:
        result["train"], result["train_skipped"] = None, "skipped (--skip-train)"
    else:
        with tempfile.TemporaryDirectory() as work:
            result["train"], result["train_skipped"] = part("fairseq-train", lambda: train_wps(device, plan, work))
    result["seconds"] = time.time() - t_start
    print_tables(result, plan)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "gpu_check.json"), "w") as f:
        json.dump(result, f, indent=1, default=lambda x: None if isinstance(x, float) and math.isnan(x) else str(x))
    ok = all(r["ok"] for r in result["correctness"] + result["syncs"])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
