"""Time and extra peak memory of the loss from logits: fairseq's stock
label-smoothed CE, a naive full-probability EL (the authors' formula, as their
fork computes it: ~10 vocabulary-sized temporaries), and our implementations.

    python benchmarks/bench_loss.py                       # CPU, default sizes
    python benchmarks/bench_loss.py --sizes 4096x16000 --threads 2 --csv out.csv
    python benchmarks/bench_loss.py --device cuda --dtype bfloat16 --sizes 16384x32000,16384x128000

CPU: every (provider, size, mode) runs in its own subprocess, so its peak RSS
(VmHWM) is its own; "extra peak" is peak RSS minus RSS after the inputs were
allocated. GPU: torch.cuda.max_memory_allocated minus the inputs. Times are
medians over --repeats runs after one warm-up. Ratios are against the stock
criterion measured in the same run.
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

PROVIDERS = ["stock_ls_ce", "naive_el", "chunked", "triton"]  # "reference" (float64) on request
EPS, LE = 0.1, 0.5
PAD = 1  # fairseq's padding index: a valid class id that is ignored


def _stock(logits, target):
    from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

    lprobs = torch.log_softmax(logits.float(), dim=-1)  # what fairseq's get_normalized_probs does
    loss, _ = label_smoothed_nll_loss(lprobs, target, EPS, ignore_index=PAD, reduce=True)
    return loss


def _naive(logits, target):
    # The authors' formula as their fork computes it: full-vocabulary
    # probabilities, smoothing over all classes, clamp/where on every entry.
    lprobs = torch.log_softmax(logits.float(), dim=-1)
    V = lprobs.size(-1)
    probs = lprobs.exp()
    one_minus = torch.clamp(1.0 - probs, min=1e-5)
    bonus = torch.where(probs <= LE, torch.log(one_minus),
                        (torch.log(torch.tensor(1.0 - LE)) - (probs - LE) / (1.0 - LE)))
    mask = target.ne(PAD).unsqueeze(-1).float()
    q = torch.full_like(lprobs, EPS / (V - 1)).scatter_(1, target.unsqueeze(-1), 1.0 - EPS)
    return ((-(q * lprobs) + q * bonus) * mask).sum()


def _ours(impl):
    def f(logits, target):
        from wce_fairseq.functional import encouraging_loss

        return encouraging_loss(logits, target, label_smoothing=EPS, log_end=LE, reduction="sum", impl=impl,
                                ignore_index=PAD)

    return f


def fn_for(provider):
    return {"stock_ls_ce": _stock, "naive_el": _naive}.get(provider) or _ours(provider)


def _rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def _reset_peak():
    # Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(provider, N, V, mode, dtype, device, repeats, threads):
    """One measurement: (median seconds, extra peak bytes)."""
    global torch
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    logits = (torch.randn(N, V, device=device) * 3).to(dt)
    target = torch.randint(0, V, (N,), device=device)
    target[::17] = PAD  # some padding, like a real batch
    fn = fn_for(provider)
    grad = mode == "fwd+bwd"

    def once():
        x = logits.detach().requires_grad_(grad)
        loss = fn(x, target)
        if grad:
            loss.backward()
        return loss

    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        once()
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - base
    else:
        import gc

        gc.collect()
        ok = _reset_peak()
        base = _rss_kib("VmRSS")
        once()
        extra = (_rss_kib("VmHWM") - base) * 1024 if ok else float("nan")
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        once()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), extra


def write_csv(rows, path):
    if not rows:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"\nwrote {path}")


def child(argv):
    a = json.loads(argv)
    t, m = measure(**a)
    print(json.dumps({"time_s": t, "extra_bytes": m}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4096x16000,2048x32000,1024x128000")
    ap.add_argument("--providers", default=",".join(PROVIDERS))
    ap.add_argument("--modes", default="fwd,fwd+bwd")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--csv", default=os.path.join(REPO, "benchmarks", "results", "loss_bench.csv"))
    ap.add_argument("--skip-naive-above", type=float, default=2.5e8, help="skip naive_el/reference above N*V")
    a = ap.parse_args(argv)

    from wce_fairseq.functional import IMPLEMENTATIONS

    providers = [p for p in a.providers.split(",") if p in ("stock_ls_ce", "naive_el") or p in IMPLEMENTATIONS]
    if a.device == "cpu":
        providers = [p for p in providers if p != "triton"]  # the CPU interpreter is not a benchmark
    sizes = [tuple(int(x) for x in s.split("x")) for s in a.sizes.split(",")]
    rows = []
    total = len(sizes) * len(providers) * len(a.modes.split(","))
    k = 0
    for N, V in sizes:
        for mode in a.modes.split(","):
            for prov in providers:
                k += 1
                if prov in ("naive_el", "reference") and N * V > a.skip_naive_above:
                    continue
                spec = dict(provider=prov, N=N, V=V, mode=mode, dtype=a.dtype, device=a.device,
                            repeats=a.repeats, threads=a.threads)
                print(f"[{k}/{total}] {prov:<12} N={N} V={V} {mode}", file=sys.stderr, flush=True)
                if a.device == "cpu":
                    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                                       text=True, env=dict(os.environ, OMP_NUM_THREADS=str(a.threads)))
                    if p.returncode != 0:
                        print(p.stderr[-2000:], file=sys.stderr)
                        continue
                    r = json.loads(p.stdout.strip().splitlines()[-1])
                else:
                    t, m = measure(**spec)
                    r = {"time_s": t, "extra_bytes": m}
                rows.append(dict(provider=prov, N=N, V=V, mode=mode, dtype=a.dtype, device=a.device, **r))

    # ratios against the stock criterion of the same size and mode
    for r in rows:
        base = next((b for b in rows if b["provider"] == "stock_ls_ce" and (b["N"], b["V"], b["mode"]) ==
                     (r["N"], r["V"], r["mode"])), None)
        r["time_x_stock"] = r["time_s"] / base["time_s"] if base else float("nan")
        r["mem_x_stock"] = r["extra_bytes"] / base["extra_bytes"] if base and base["extra_bytes"] else float("nan")

    import platform

    import torch

    dev = torch.cuda.get_device_name() if a.device == "cuda" else f"{platform.processor() or platform.machine()}, {a.threads} threads"
    print(f"\nloss from logits, {a.dtype} on {a.device} ({dev}); torch {torch.__version__}; "
          f"eps={EPS}, LE={LE}; median of {a.repeats}")
    print(f"{'N x V':>14} {'mode':<8} {'provider':<12} {'time ms':>9} {'x stock':>8} {'extra MiB':>10} {'x stock':>8}")
    for r in rows:
        print(f"{r['N']:>6} x {r['V']:<6} {r['mode']:<8} {r['provider']:<12} {1000 * r['time_s']:>9.1f} "
              f"{r['time_x_stock']:>8.2f} {r['extra_bytes'] / 2**20:>10.1f} {r['mem_x_stock']:>8.2f}")
    if a.csv:
        write_csv(rows, a.csv)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        main()
