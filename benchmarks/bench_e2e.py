"""End-to-end training speed: fairseq-train words/second with the encouraging
loss vs fairseq's stock label-smoothed CE, same model, data and seed, on the
CPU. Runs alternate (stock, EL, stock, EL, ...) so drift hits both alike.

    python benchmarks/bench_e2e.py [--data DIR/bin] [--updates 60] [--rounds 2] [--vocab 16000]

Without --data it generates data: with --vocab (an MT-sized vocabulary, where
the loss is a real share of the step) random-token sentences over a fixed
dictionary of that size (``common.synthetic_data``; speed depends on
the vocabulary size, not on what the tokens mean); without it the
quickstart's synthetic corpus with a 256-piece SentencePiece model.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

import common
from common import REPO

BIN = os.path.dirname(sys.executable)
MODEL = ["--arch", "transformer", "--share-all-embeddings", "--encoder-layers", "2", "--decoder-layers", "2",
         "--encoder-embed-dim", "256", "--decoder-embed-dim", "256", "--encoder-ffn-embed-dim", "512",
         "--decoder-ffn-embed-dim", "512", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
         "--optimizer", "adam", "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100",
         "--max-tokens", "4096", "--cpu", "--num-workers", "0", "--no-save", "--disable-validation",
         "--log-format", "simple", "--log-interval", "10", "--seed", "1"]
SYSTEMS = {
    "stock LS-CE": ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"],
    "EL (auto)": ["--criterion", "encouraging_ce", "--label-smoothing", "0.1", "--log-end", "0.5"],
    "EL fused": ["--criterion", "encouraging_ce", "--label-smoothing", "0.1", "--log-end", "0.5",
                 "--el-fuse-projection"],
}


def wps(data, crit, updates):
    cmd = [os.path.join(BIN, "fairseq-train"), data, "--user-dir", os.path.join(REPO, "wce_fairseq"),
           "--task", "translation_encouraging", *crit, *MODEL, "--max-update", str(updates)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        sys.exit(p.stdout[-2000:] + p.stderr[-2000:])
    vals = [float(m) for m in re.findall(r"train_inner \|.*?wps=([\d.]+)", p.stdout)]
    return statistics.mean(vals[1:]) if len(vals) > 1 else vals[0]  # first interval includes warm-up


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data")
    ap.add_argument("--work", default="/tmp/wce_e2e")
    ap.add_argument("--updates", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=0, help="random-token data over a dictionary of this size")
    a = ap.parse_args()
    if a.data:
        data = a.data
    elif a.vocab:
        data = common.synthetic_data(os.path.join(a.work, f"v{a.vocab}"), a.vocab, 20000, 30)
    else:
        data = common.toy_data(a.work, 256)
    res = {k: [] for k in SYSTEMS}
    for r in range(a.rounds):
        for name, crit in SYSTEMS.items():
            res[name].append(wps(data, crit, a.updates))
            print(f"[round {r + 1}/{a.rounds}] {name}: {res[name][-1]:.0f} words/s", file=sys.stderr, flush=True)
    base = statistics.median(res["stock LS-CE"])
    from fairseq.data import Dictionary

    V = len(Dictionary.load(os.path.join(data, "dict.src.txt"))) if os.path.exists(
        os.path.join(data, "dict.src.txt")) else "?"
    print(f"\nfairseq-train on CPU ({os.cpu_count()} cores), transformer 2+2 layers x 256, vocabulary {V}, "
          f"{a.updates} updates, median of {a.rounds} alternating runs; data {data}")
    print("| criterion | words/s | x stock | runs |\n|---|---:|---:|---|")
    for name, v in res.items():
        print(f"| {name} | {statistics.median(v):.0f} | {statistics.median(v) / base:.3f} | "
              + " ".join(f"{x:.0f}" for x in v) + " |")


if __name__ == "__main__":
    main()
