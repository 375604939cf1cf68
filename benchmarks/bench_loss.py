"""Time and extra peak memory of the loss from logits as training runs it:
fairseq's stock label-smoothed CE (fp32 log-softmax, then
``label_smoothed_nll_loss``), a naive full-probability EL (the authors'
formula, as their fork computes it: ~10 vocabulary-sized temporaries), and our
implementations called as the ``encouraging_ce`` criterion calls them
(diagnostics on, ``reduction="sum"``, padding ignored, the diagnostics read
back to the host).

    python benchmarks/bench_loss.py                       # CPU, default sizes, random and realistic logits
    python benchmarks/bench_loss.py --sizes 4096x16000 --threads 2,1 --busy 0,1,2
    python benchmarks/bench_loss.py --device cuda --dtype bfloat16 --sizes 16384x32000,16384x128000

Logits: ``random`` (N(0, 3^2), no row confident) or ``realistic``: 80 % of rows
confidently right (+18 on the target over N(0, 2^2)), 5 % confidently wrong,
15 % uncertain, as a trained translation model; every 17th token padding.
``--busy K`` runs K single-threaded busy-loop processes beside the
measurement, as data loaders or a second job would; ``--threads`` sets the
measured process's threads (``OMP_NUM_THREADS``; default: torch's own choice,
the number of cores).

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


STATS = True  # as the criterion runs it; --no-stats measures the bare loss


def _ours(impl):
    def f(logits, target):
        from wce_fairseq.functional import encouraging_loss_parts
        from wce_fairseq.ops.bonus import BonusSpec

        # as the criterion calls it on raw logits: the gradient goes over them
        extra = {"inplace_backward": True} if impl != "reference" and logits.requires_grad else {}
        res = encouraging_loss_parts(logits, target, BonusSpec(label_smoothing=EPS, log_end=LE), ignore_index=PAD,
                                     reduction="sum", impl=impl, want_stats=STATS, **extra)
        if STATS:
            [float(x) for x in res.stats]  # fairseq reads the criterion's diagnostics back for the log
        return res.loss

    return f


def make_logits(kind, N, V, device, dtype, seed=0):
    """(logits, target): ``random`` or ``realistic`` (see the module doc)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        z = torch.randn(N, V, generator=g) * 3
        t = torch.randint(0, V, (N,), generator=g)
    elif kind == "realistic":
        z = torch.randn(N, V, generator=g) * 2.0
        t = torch.randint(0, V, (N,), generator=g)
        r = torch.rand(N, generator=g)
        right, wrong = r < 0.8, (r >= 0.8) & (r < 0.85)
        z[right, t[right]] += 18.0
        z[wrong, (t[wrong] + 1) % V] += 18.0
    else:
        raise ValueError(kind)
    t[::17] = PAD  # some padding, like a real batch
    return z.to(device=device, dtype=dtype), t.to(device)


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


def measure(provider, N, V, mode, dtype, device, repeats, threads, logits_kind="random", stats=True):
    """One measurement: (median seconds, extra peak bytes)."""
    global torch, STATS
    import torch

    STATS = stats
    if threads:
        torch.set_num_threads(threads)
    logits, target = make_logits(logits_kind, N, V, device, getattr(torch, dtype))
    fn = fn_for(provider)
    grad = mode == "fwd+bwd"

    # Every call gets its own copy of the logits, made before the clock starts,
    # as training hands the loss freshly computed logits (EL writes its
    # gradient over them, as the criterion does).
    def fresh():
        return logits.clone().requires_grad_(grad)

    def once(x):
        loss = fn(x, target)
        if grad:
            loss.backward()
        return loss

    if device == "cuda":
        x = fresh()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        once(x)
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - base
    else:
        import gc

        x = fresh()
        gc.collect()
        ok = _reset_peak()
        base = _rss_kib("VmRSS")
        once(x)
        extra = (_rss_kib("VmHWM") - base) * 1024 if ok else float("nan")
    del x
    times = []
    for _ in range(repeats):
        x = fresh()
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        once(x)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        del x
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


def run_one(spec, device):
    """A CPU measurement in its own process (its peak RSS is its own)."""
    if device != "cpu":
        t, m = measure(**spec)
        return {"time_s": t, "extra_bytes": m}
    env = dict(os.environ)
    if spec["threads"]:
        env["OMP_NUM_THREADS"] = str(spec["threads"])
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                       env=env)
    if p.returncode != 0:
        print(p.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def child(argv):
    a = json.loads(argv)
    t, m = measure(**a)
    print(json.dumps({"time_s": t, "extra_bytes": m}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4096x16000,2048x32000,1024x128000")
    ap.add_argument("--providers", default="stock_ls_ce,chunked")
    ap.add_argument("--modes", default="fwd,fwd+bwd")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", default="0", help="comma list; 0 = torch's default (the number of cores)")
    ap.add_argument("--logits", default="random,realistic")
    ap.add_argument("--busy", default="0", help="comma list of busy processes to run beside the measurement")
    ap.add_argument("--no-stats", action="store_true", help="EL without the diagnostics the criterion computes")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--csv", default=os.path.join(REPO, "benchmarks", "results", "loss_bench.csv"))
    ap.add_argument("--skip-naive-above", type=float, default=2.5e8, help="skip naive_el/reference above N*V")
    a = ap.parse_args(argv)

    from wce_fairseq.functional import IMPLEMENTATIONS

    providers = [p for p in a.providers.split(",") if p in ("stock_ls_ce", "naive_el") or p in IMPLEMENTATIONS]
    if a.device == "cpu":
        providers = [p for p in providers if p != "triton"]  # the CPU interpreter is not a benchmark
    sizes = [tuple(int(x) for x in s.split("x")) for s in a.sizes.split(",")]
    kinds, modes = a.logits.split(","), a.modes.split(",")
    busies, threads = [int(b) for b in a.busy.split(",")], [int(t) for t in a.threads.split(",")]
    rows = []
    total = len(sizes) * len(providers) * len(modes) * len(kinds) * len(busies) * len(threads)
    k = 0
    for busy in busies:
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        try:
            for th in threads:
                for N, V in sizes:
                    for kind in kinds:
                        for mode in modes:
                            for prov in providers:
                                k += 1
                                if prov in ("naive_el", "reference") and N * V > a.skip_naive_above:
                                    continue
                                spec = dict(provider=prov, N=N, V=V, mode=mode, dtype=a.dtype, device=a.device,
                                            repeats=a.repeats, threads=th, logits_kind=kind, stats=not a.no_stats)
                                print(f"[{k}/{total}] busy={busy} threads={th or 'default'} {prov:<12} N={N} V={V} "
                                      f"{kind} {mode}", file=sys.stderr, flush=True)
                                r = run_one(spec, a.device)
                                if r is not None:
                                    rows.append(dict(provider=prov, N=N, V=V, logits=kind, mode=mode, busy=busy,
                                                     threads=th or "default", dtype=a.dtype, device=a.device, **r))
        finally:
            for h in hogs:
                h.kill()
                h.wait()

    # ratios against the stock criterion of the same size and mode
    def key(r):
        return (r["N"], r["V"], r["mode"], r["logits"], r["busy"], r["threads"])

    for r in rows:
        base = next((b for b in rows if b["provider"] == "stock_ls_ce" and key(b) == key(r)), None)
        r["time_x_stock"] = r["time_s"] / base["time_s"] if base else float("nan")
        r["mem_x_stock"] = r["extra_bytes"] / base["extra_bytes"] if base and base["extra_bytes"] else float("nan")

    import platform

    import torch

    dev = torch.cuda.get_device_name() if a.device == "cuda" else f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"\nloss from logits as the criterion runs it (EL diagnostics {'off' if a.no_stats else 'on'}), "
          f"{a.dtype} on {a.device} ({dev}); torch {torch.__version__}; eps={EPS}, LE={LE}; median of {a.repeats}")
    print(f"| N x V | logits | mode | busy | threads | provider | ms | x stock | extra MiB | x stock |")
    print("|---|---|---|---:|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['N']} x {r['V']} | {r['logits']} | {r['mode']} | {r['busy']} | {r['threads']} | "
              f"{r['provider']} | {1000 * r['time_s']:.1f} | {r['time_x_stock']:.2f} | "
              f"{r['extra_bytes'] / 2**20:.1f} | {r['mem_x_stock']:.2f} |")
    if a.csv:
        write_csv(rows, a.csv)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        main()
