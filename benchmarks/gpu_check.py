"""One prepared GPU check, meant to finish in under 5 minutes on one GPU:

1. the Triton kernel is compiled and checked against the float64 reference
   (fp32, bf16, fp16 logits; N = 16384; V = 32000 and 128000; realistic rows,
   padding, an upstream gradient of 2^16 as a loss scaler gives it): rows are
   independent, so a sample of rows is compared with the reference;
2. the loss from logits, forward + backward, bf16: fairseq's stock
   label-smoothed CE as fairseq runs it, chunked, Triton and the fused
   projection: time, extra peak memory, ratios to stock, and four passes over
   the logits at the measured copy bandwidth;
3. fairseq-train, 200 updates, --fp16 and --bf16, stock vs EL: words/s
   (skipped, with the reason, where fairseq is not installed).

    python benchmarks/gpu_check.py [--out DIR] [--updates 200] [--skip-train]
    python benchmarks/gpu_check.py --smoke      # tiny sizes, any device: checks the script itself

It prints tables and writes them to DIR/gpu_check.json.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import torch  # noqa: E402

EPS, LE, PAD = 0.1, 0.5, 1


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def check_correctness(device, sizes, dtypes, sample):
    import bench_loss
    from wce_fairseq.functional import encouraging_loss, self_check
    from wce_fairseq.ops.reference import reference_forward
    from wce_fairseq.ops.bonus import BonusSpec

    impl = "triton" if device.type == "cuda" else "chunked"
    rows = [{"check": "self-check (%s on %s)" % (impl, device), "ok": self_check(impl, device) is None,
             "detail": self_check(impl, device) or "agrees with the float64 reference"}]
    spec = BonusSpec(label_smoothing=EPS, log_end=LE)
    up = 2.0 ** 16
    for N, V in sizes:
        for dt in dtypes:
            t0 = time.time()
            z, t = bench_loss.make_logits("realistic", N, V, device, dt)
            x = z.clone().requires_grad_(True)
            loss = encouraging_loss(x, t, label_smoothing=EPS, log_end=LE, reduction="sum", impl=impl,
                                    ignore_index=PAD)
            loss.backward(torch.tensor(up, device=device))
            torch.cuda.synchronize() if device.type == "cuda" else None
            idx = torch.randperm(N, generator=torch.Generator().manual_seed(1))[:sample].to(device)
            zr = z.index_select(0, idx).double().requires_grad_(True)
            ref = reference_forward(zr, t.index_select(0, idx), spec, PAD, "sum", False)
            (ref.loss * up).backward()
            exact = zr.grad
            got = x.grad.index_select(0, idx)
            cast = exact.to(dt)
            fin = torch.isfinite(cast)
            nonfinite = int((~torch.isfinite(got) & fin).sum())
            # what fp32 arithmetic can reach: a few units of its rounding of the
            # terms each entry is made of (p_j - q_j cancels where p_j ~ q_j)
            with torch.no_grad():
                terms = exact.abs() + up * (torch.softmax(zr.detach(), -1) + 2 * EPS / (V - 1))
            slack = 2.0 ** -20 * terms
            fi = torch.finfo(dt)
            sub = fi.eps * fi.tiny
            extra_flush = int(((got == 0) & (cast != 0) & (exact.abs() > sub / 2 + slack)).sum())
            err_abs = (got.double() - exact).abs()
            beyond = (err_abs > fi.eps * exact.abs() + sub + slack) & fin
            scale = exact[fin].abs().max().item()
            err = (err_abs[fin].max() / scale).item()
            # per-row loss of the full call on the sample, against the reference
            with torch.no_grad():
                lt = encouraging_loss(z.index_select(0, idx), t.index_select(0, idx), label_smoothing=EPS,
                                      log_end=LE, reduction="sum", impl=impl, ignore_index=PAD)
            lerr = abs(lt.item() - ref.loss.item()) / max(1.0, abs(ref.loss.item()))
            n_beyond = int(beyond.sum())
            ok = nonfinite == 0 and extra_flush == 0 and n_beyond == 0 and lerr <= 1e-5
            rows.append({"check": "%s %dx%d %s" % (impl, N, V, str(dt).replace("torch.", "")), "ok": ok,
                         "detail": "max grad err %.1e of its largest entry; %d entries beyond one rounding, %d "
                                   "non-finite, %d extra flushes (upstream 2^16, %d rows vs float64); loss rel "
                                   "err %.1e; %.1f s" % (err, n_beyond, nonfinite, extra_flush, sample, lerr,
                                                         time.time() - t0)})
            log("[correctness] %s: %s" % (rows[-1]["check"], "PASS" if ok else "FAIL"))
            del z, x, loss, zr
    return rows


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


def time_loss(device, sizes, dtype, repeats, hidden):
    import bench_loss
    from wce_fairseq.ops.bonus import BonusSpec
    from wce_fairseq.ops.fused_linear import fused_linear_encouraging_loss

    impls = ["stock_ls_ce", "chunked"] + (["triton"] if device.type == "cuda" else [])
    bw = copy_bandwidth(device, 2 * 2**30)
    out = []
    for N, V in sizes:
        for prov in impls + ["fused"]:
            if prov == "fused":
                t, m = _time_fused(device, N, V, hidden, dtype, repeats, fused_linear_encouraging_loss, BonusSpec)
            else:
                t, m = bench_loss.measure(prov, N, V, "fwd+bwd", str(dtype).replace("torch.", ""), device.type,
                                          repeats, torch.get_num_threads())
            out.append({"N": N, "V": V, "provider": prov, "time_s": t, "extra_bytes": m})
            log("[timing] %s %dx%d: %.2f ms" % (prov, N, V, 1e3 * t))
        four = 4 * N * V * torch.finfo(dtype).bits / 8 / bw if bw == bw else float("nan")
        out.append({"N": N, "V": V, "provider": "4 passes at copy bandwidth", "time_s": four, "extra_bytes": 0})
    for r in out:
        base = next(b for b in out if b["provider"] == "stock_ls_ce" and (b["N"], b["V"]) == (r["N"], r["V"]))
        r["time_x_stock"] = r["time_s"] / base["time_s"]
        r["mem_x_stock"] = r["extra_bytes"] / base["extra_bytes"] if base["extra_bytes"] else float("nan")
    return out, bw


def _time_fused(device, N, V, D, dtype, repeats, fn, BonusSpec):
    """The fused projection: hidden states and weight in, no logits. Its extra
    memory is measured above the inputs, like the others (whose inputs are
    the logits): it never holds them."""
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(N, D, generator=g) * 0.5).to(device=device, dtype=dtype)
    w = (torch.randn(V, D, generator=g) * 0.05).to(device=device, dtype=dtype)
    t = torch.randint(0, V, (N,), generator=g).to(device)
    spec = BonusSpec(label_smoothing=EPS, log_end=LE)

    def once():
        hx, wx = h.detach().requires_grad_(True), w.detach().requires_grad_(True)
        fn(hx, wx, None, t, spec, ignore_index=PAD, reduction="sum").loss.backward()

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


def _synthetic_data(root, vocab, n_train, length):
    """Random-token parallel text over a fixed dictionary: the loss sees a real
    MT-sized vocabulary without any tokenizer."""
    os.makedirs(root, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    with open(os.path.join(root, "dict.txt"), "w") as f:
        for i in range(vocab - 4):
            f.write("w%d %d\n" % (i, vocab - i))
    for split, n in (("train", n_train), ("valid", 64)):
        for lang in ("src", "tgt"):
            ids = torch.randint(0, vocab - 4, (n, length), generator=g).tolist()
            with open(os.path.join(root, "%s.%s" % (split, lang)), "w") as f:
                f.writelines(" ".join("w%d" % i for i in row) + "\n" for row in ids)
    tool = os.path.join(os.path.dirname(sys.executable), "fairseq-preprocess")
    subprocess.run([tool if os.path.exists(tool) else "fairseq-preprocess", "--source-lang", "src",
                    "--target-lang", "tgt", "--trainpref", os.path.join(root, "train"),
                    "--validpref", os.path.join(root, "valid"), "--destdir", os.path.join(root, "bin"),
                    "--srcdict", os.path.join(root, "dict.txt"), "--joined-dictionary", "--workers", "4"],
                   check=True, capture_output=True)
    return os.path.join(root, "bin")


def train_wps(device, updates, work, smoke):
    try:
        import fairseq  # noqa: F401
    except ImportError:
        return None, "fairseq is not installed in this Python; install it (see the README) to run this part"
    vocab = 256 if smoke else 32000
    data = _synthetic_data(os.path.join(work, "data"), vocab, 200 if smoke else 20000, 12 if smoke else 40)
    model = (["--arch", "transformer", "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32",
              "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
              "--encoder-attention-heads", "2", "--decoder-attention-heads", "2", "--max-tokens", "1000"]
             if smoke else ["--arch", "transformer", "--max-tokens", "16384"])
    common = ["--share-all-embeddings", "--optimizer", "adam", "--lr", "5e-4", "--lr-scheduler", "inverse_sqrt",
              "--warmup-updates", "100", "--no-save", "--disable-validation", "--log-format", "simple",
              "--log-interval", "10" if not smoke else "1", "--seed", "1", "--num-workers", "2",
              "--max-update", str(updates), "--user-dir", os.path.join(REPO, "wce_fairseq"),
              "--task", "translation_encouraging"]
    if device.type != "cuda":
        common.append("--cpu")
    systems = {"stock LS-CE": ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"],
               "EL": ["--criterion", "encouraging_ce", "--label-smoothing", "0.1", "--log-end", "0.5"]}
    precisions = {"fp16": ["--fp16"], "bf16": ["--bf16"]} if device.type == "cuda" else {"fp32 (cpu)": []}
    tool = os.path.join(os.path.dirname(sys.executable), "fairseq-train")
    tool = tool if os.path.exists(tool) else "fairseq-train"
    rows = []
    for prec, pflags in precisions.items():
        for name, crit in systems.items():
            p = subprocess.run([tool, data, *model, *common, *crit, *pflags], capture_output=True, text=True)
            if p.returncode:
                rows.append({"precision": prec, "criterion": name, "wps": float("nan"),
                             "detail": (p.stdout + p.stderr)[-600:]})
                log("[train] %s %s FAILED" % (prec, name))
                continue
            vals = [float(v) for v in re.findall(r"train_inner \|.*?wps=([\d.]+)", p.stdout)]
            wps = statistics.mean(vals[1:]) if len(vals) > 1 else (vals[0] if vals else float("nan"))
            impl = re.search(r"loss implementation (\w+)", p.stdout + p.stderr)
            rows.append({"precision": prec, "criterion": name, "wps": wps,
                         "detail": "impl %s" % impl.group(1) if impl else ""})
            log("[train] %s %s: %.0f words/s" % (prec, name, wps))
    for r in rows:
        base = next(b for b in rows if b["precision"] == r["precision"] and b["criterion"] == "stock LS-CE")
        r["x_stock"] = r["wps"] / base["wps"]
    return rows, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    ap.add_argument("--updates", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=1024, help="hidden size for the fused projection")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on any device: checks the script runs")
    a = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if a.smoke:
        sizes, sample, repeats, updates, hidden = [(64, 3000)], 16, 2, 4, 64
    else:
        sizes, sample, repeats, updates, hidden = [(16384, 32000), (16384, 128000)], 256, a.repeats, a.updates, a.hidden
        if device.type != "cuda":
            sys.exit("gpu_check: no CUDA device here (use --smoke to check the script on the CPU)")
    t_start = time.time()
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    log("[gpu_check] %s, torch %s" % (name, torch.__version__))
    dtypes = [torch.float32, torch.bfloat16, torch.float16]
    result = {"device": name, "torch": torch.__version__}
    result["correctness"] = check_correctness(device, sizes, dtypes, sample)
    result["timing"], bw = time_loss(device, sizes, torch.bfloat16, repeats, hidden)
    result["copy_bandwidth_GBps"] = bw / 1e9
    if a.skip_train:
        result["train"], why = None, "skipped (--skip-train)"
    else:
        with tempfile.TemporaryDirectory() as work:
            result["train"], why = train_wps(device, updates, work, a.smoke)
    result["seconds"] = time.time() - t_start

    print("\n## %s, torch %s (%.0f s)\n" % (name, torch.__version__, result["seconds"]))
    print("| check | result | detail |\n|---|---|---|")
    for r in result["correctness"]:
        print("| %s | %s | %s |" % (r["check"], "PASS" if r["ok"] else "FAIL", r["detail"]))
    print("\nloss from logits, bf16, forward + backward, median of %d; copy bandwidth %.0f GB/s\n"
          % (repeats, bw / 1e9))
    print("| N x V | provider | ms | x stock | extra MiB | x stock |\n|---|---|---|---|---|---|")
    for r in result["timing"]:
        print("| %d x %d | %s | %.2f | %.2f | %.0f | %.2f |" % (r["N"], r["V"], r["provider"], 1e3 * r["time_s"],
                                                               r["time_x_stock"], r["extra_bytes"] / 2**20,
                                                               r["mem_x_stock"]))
    if result["train"]:
        print("\nfairseq-train, %d updates: words/s\n" % updates)
        print("| precision | criterion | words/s | x stock | |\n|---|---|---|---|---|")
        for r in result["train"]:
            print("| %s | %s | %.0f | %.3f | %s |" % (r["precision"], r["criterion"], r["wps"], r["x_stock"],
                                                    r["detail"][:120].replace("\n", " ")))
    else:
        print("\nfairseq-train: %s" % why)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "gpu_check.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    ok = all(r["ok"] for r in result["correctness"])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
