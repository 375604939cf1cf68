"""Peak loss memory with and without --el-fuse-projection: loss from decoder
features h [N, D] and the output projection W [V, D], forward + backward,
for growing N. Unfused materialises the N×V logits (and their gradient);
fused keeps one chunk of logits at a time.

    python benchmarks/bench_fused.py [--tokens 1024,4096,16384] [--vocab 32000] [--dim 512]
    python benchmarks/bench_fused.py --tokens 2048 --vocab 128256 --dim 1024 --chunk-rows 32,128,256,0

CPU: one subprocess per measurement; extra peak = peak RSS minus RSS after
the inputs exist. Prints a table and writes CSV.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from common import REPO


def measure(mode, N, V, D, threads, repeats, chunk_rows=None):
    import torch

    from common import reset_peak, rss_kib  # the loss benchmark's RSS method
    from wce_fairseq.functional import encouraging_loss_parts
    from wce_fairseq.ops.bonus import BonusSpec
    from wce_fairseq.ops.fused_linear import fused_linear_encouraging_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    h0 = torch.randn(N, D)
    w0 = torch.randn(V, D) * D ** -0.5
    t = torch.randint(0, V, (N,))
    spec = BonusSpec(label_smoothing=0.1, log_end=0.5)

    def once():
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        if mode == "fused":
            loss = fused_linear_encouraging_loss(h, w, None, t, spec, reduction="sum", chunk_rows=chunk_rows).loss
        else:
            loss = encouraging_loss_parts(h @ w.t(), t, spec, reduction="sum", impl="chunked").loss
        loss.backward()

    import gc

    gc.collect()
    reset_peak()
    base = rss_kib("VmRSS")
    once()
    extra = (rss_kib("VmHWM") - base) * 1024
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), extra


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", default="1024,4096,16384")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk-rows", default="0", help="comma list of the fused path's rows per chunk (0: its own rule)")
    ap.add_argument("--csv", default=os.path.join(REPO, "benchmarks", "results", "fused_bench.csv"))
    a = ap.parse_args()
    rows = []
    runs = [("unfused", None)] + [("fused", int(r) or None) for r in a.chunk_rows.split(",")]
    for N in [int(x) for x in a.tokens.split(",")]:
        for mode, chunk_rows in runs:
            print(f"[{mode}] N={N} rows per chunk {chunk_rows or 'default'}", file=sys.stderr, flush=True)
            spec = dict(mode=mode, N=N, V=a.vocab, D=a.dim, threads=a.threads, repeats=a.repeats,
                        chunk_rows=chunk_rows)
            p = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                               cwd=os.path.dirname(os.path.abspath(__file__)))
            if p.returncode:
                print(p.stderr[-2000:], file=sys.stderr)
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            label = mode if chunk_rows is None else f"{mode} ({chunk_rows} rows)"
            rows.append(dict(mode=label, N=N, V=a.vocab, D=a.dim, **r))
    print(f"\nloss from features (fwd+bwd), fp32 CPU, {a.threads} threads, V={a.vocab}, D={a.dim}")
    print("| N | mode | time ms | x unfused | extra peak MiB | N x V logits MiB |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        base = next(x for x in rows if x["N"] == r["N"] and x["mode"] == "unfused")
        print(f"| {r['N']} | {r['mode']} | {1000 * r['time_s']:.1f} | {r['time_s'] / base['time_s']:.2f} | "
              f"{r['extra_bytes'] / 2**20:.1f} | {r['N'] * r['V'] * 4 / 2**20:.1f} |")
    from common import write_csv

    write_csv(rows, a.csv)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        t, m = measure(**json.loads(sys.argv[2]))
        print(json.dumps({"time_s": t, "extra_bytes": m}))
    else:
        main()
