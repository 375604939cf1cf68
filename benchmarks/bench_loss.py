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
import json
import os
import subprocess
import sys

from common import EPS, LE, REPO, measure, write_csv


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
    print("| N x V | logits | mode | busy | threads | provider | ms | x stock | extra MiB | x stock |")
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
