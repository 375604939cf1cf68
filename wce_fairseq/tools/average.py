"""Average the model parameters of the last N checkpoints, in float64, saved
in fp32 (fairseq's repository ships scripts/average_checkpoints.py, the pip
wheels do not). ``--by epoch`` takes ``checkpointE.pt`` (one per epoch),
``--by update`` takes ``checkpoint_E_U.pt`` (``--save-interval-updates``),
ordered by update; ``auto`` takes update checkpoints where there are any.

    python -m wce_fairseq.tools.average --dir CKPT_DIR --last 10 --out CKPT_DIR/checkpoint_avg10.pt [--by update]
"""
import argparse
import collections
import os
import re
import sys


def last_checkpoints(directory, n, by="auto"):
    epochs, updates = [], []
    for f in os.listdir(directory):
        m = re.fullmatch(r"checkpoint(\d+)\.pt", f)
        if m:
            epochs.append((int(m.group(1)), os.path.join(directory, f)))
        m = re.fullmatch(r"checkpoint_(\d+)_(\d+)\.pt", f)
        if m:
            updates.append((int(m.group(2)), os.path.join(directory, f)))
    if by == "auto":
        by = "update" if updates else "epoch"
    found = sorted(updates if by == "update" else epochs)
    if not found:
        pattern = "checkpoint_E_U.pt" if by == "update" else "checkpointN.pt"
        sys.exit(f"average: no {pattern} files in {directory}")
    return [p for _, p in found[-n:]]


def average(paths):
    import torch

    import wce_fairseq

    wce_fairseq.register()  # allows fairseq's checkpoint contents under safe loading
    avg = collections.OrderedDict()
    first = None
    for p in paths:
        state = torch.load(p, map_location="cpu")
        first = first or state
        for k, v in state["model"].items():
            v = v.double() if v.is_floating_point() else v
            if k in avg:
                avg[k] = avg[k] + v if v.is_floating_point() else avg[k]
            else:
                avg[k] = v.clone()
    for k, v in avg.items():
        if v.is_floating_point():  # fp32 (fp16/bf16 checkpoints of --fp16/--bf16 runs come out in fp32)
            avg[k] = (v / len(paths)).to(torch.float64 if first["model"][k].dtype == torch.float64 else torch.float32)
    first["model"] = avg
    return first


def main(argv=None):
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--last", type=int, default=10)
    ap.add_argument("--by", choices=("auto", "epoch", "update"), default="auto")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    paths = last_checkpoints(a.dir, a.last, a.by)
    print(f"[average] {len(paths)} checkpoints: {', '.join(os.path.basename(p) for p in paths)}", file=sys.stderr)
    torch.save(average(paths), a.out)
    print(a.out)


if __name__ == "__main__":
    main()
