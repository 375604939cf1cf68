"""Average the model parameters of the last N checkpoints, in float64, saved
in fp32 (fairseq's repository ships scripts/average_checkpoints.py, the pip
wheels do not). ``--by epoch`` takes ``checkpointE.pt`` (one per epoch),
``--by update`` takes ``checkpoint_E_U.pt`` (``--save-interval-updates``),
ordered by update; ``auto`` takes update checkpoints where there are any.

    python -m wce_fairseq.tools.average --dir CKPT_DIR --last 10 --out CKPT_DIR/checkpoint_avg10.pt [--by update]

As with fairseq's script, everything but the floating-point weights comes
from the *newest* of the averaged checkpoints (its training state, its
configuration, the progress of a bonus schedule, integer buffers), and
``--last N`` must be at least 1 and at most the number of checkpoints found.
"""
import argparse
import collections
import os
import re
import sys


def last_checkpoints(directory, n, by="auto"):
    """The last ``n`` checkpoints of ``directory``, oldest first; exits with
    the reason where there are fewer than ``n`` (or ``n`` < 1)."""
    if n < 1:
        sys.exit(f"average: --last must be at least 1; got {n}")
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
    pattern = "checkpoint_E_U.pt" if by == "update" else "checkpointN.pt"
    if len(found) < n:
        sys.exit(f"average: --last {n} needs {n} {pattern} files in {directory}; found {len(found)}")
    return [p for _, p in found[-n:]]


def average(paths):
    """The newest checkpoint (``paths[-1]``) with the mean of every
    checkpoint's floating-point weights."""
    import torch

    import wce_fairseq

    wce_fairseq.register()  # allows fairseq's checkpoint contents under safe loading
    total = collections.OrderedDict()
    newest = None
    for p in paths:
        newest = torch.load(p, map_location="cpu")
        for k, v in newest["model"].items():
            if not v.is_floating_point():
                total[k] = v  # integer buffers: the newest's
            elif k in total:
                total[k] += v.double()
            else:
                total[k] = v.double()
    avg = collections.OrderedDict()
    for k, v in total.items():
        if v.is_floating_point():  # fp32 (fp16/bf16 checkpoints of --fp16/--bf16 runs come out in fp32)
            v = (v / len(paths)).to(torch.float64 if newest["model"][k].dtype == torch.float64 else torch.float32)
        avg[k] = v
    newest["model"] = avg
    return newest


def main(argv=None):
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--last", type=int, default=10, help="how many of the newest checkpoints (>= 1)")
    ap.add_argument("--by", choices=("auto", "epoch", "update"), default="auto")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    paths = last_checkpoints(a.dir, a.last, a.by)
    print(f"[average] {len(paths)} checkpoints: {', '.join(os.path.basename(p) for p in paths)}", file=sys.stderr)
    torch.save(average(paths), a.out)
    print(a.out)


if __name__ == "__main__":
    main()
