"""The Triton kernels' launch configuration per GPU generation, compiled
offline (no GPU needed): registers, spills, occupancy and bytes in flight.

    python -m wce_fairseq.tools.triton_report                  # the paper's variant, every architecture
    python -m wce_fairseq.tools.triton_report --all-variants --archs 80,90
    python -m wce_fairseq.tools.triton_report --json report.json

The model behind the choice is written in ``wce_fairseq/ops/triton_config.py``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv=None):
    from wce_fairseq.ops.triton_compile import Job, compile_jobs, cuda_backend_available, supported_archs, variants
    from wce_fairseq.ops.triton_config import GPU_CONFIG, KINDS, MAX_WARPS, REGISTER_BUDGET, bytes_in_flight, occupancy

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=None, help="comma list of compute capabilities x10 (default: all supported)")
    ap.add_argument("--all-variants", action="store_true", help="every bonus shape and smoothing (default: the paper's)")
    ap.add_argument("--dtypes", default="float32,bfloat16,float16")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the records here")
    a = ap.parse_args(argv)
    why = cuda_backend_available()
    if why is not None:
        sys.exit(f"triton_report: this Triton cannot compile for NVIDIA GPUs offline ({why})")
    archs = [int(x) for x in a.archs.split(",")] if a.archs else supported_archs()
    names = [v.name for v in variants()] if a.all_variants else [variants()[0].name]
    dtypes = a.dtypes.split(",")
    jobs = [Job(k, v, d, 32000, GPU_CONFIG[k].block, GPU_CONFIG[k].num_warps, arch)
            for arch in archs for k in KINDS for v in names for d in dtypes]
    print(f"compiling {len(jobs)} kernels for sm_{', sm_'.join(map(str, archs))} ...", file=sys.stderr, flush=True)
    t0 = time.time()
    results = compile_jobs(jobs, workers=a.workers)
    print(f"done in {time.time() - t0:.0f} s", file=sys.stderr)
    size = {"float32": 4, "bfloat16": 2, "float16": 2}
    for arch in archs:
        print(f"\n### sm_{arch} (at most {MAX_WARPS[arch]} warps per SM)\n")
        print("| kernel | dtype | variant | BLOCK × warps | elements/thread | registers (budget) | spills | "
              "resident warps | occupancy | bytes in flight / SM |")
        print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
        for r in results:
            if r["arch"] != arch:
                continue
            if r["error"]:
                print(f"| {r['kind']} | {r['dtype']} | {r['variant']} | — | — | does not compile: {r['error'][:80]} |")
                continue
            cfg = GPU_CONFIG[r["kind"]]
            warps, share = occupancy(arch, r["registers"], r["num_warps"])
            print(f"| {r['kind']} | {r['dtype']} | {r['variant']} | {cfg.block} × {cfg.num_warps} | "
                  f"{cfg.elements_per_thread()} | {r['registers']} ({REGISTER_BUDGET[r['kind']]}) | "
                  f"{r['spill_stores']} B | {warps} | {share:.0%} | "
                  f"{bytes_in_flight(arch, r['registers'], cfg, size[r['dtype']]) // 1024} KiB |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
