"""Average the model parameters of the last N epoch checkpoints (fairseq's
repository ships scripts/average_checkpoints.py, the pip wheels do not).

    python -m wce_fairseq.tools.average --dir CKPT_DIR --last 10 --out CKPT_DIR/checkpoint_avg10.pt
"""
import argparse
import collections
import os
import re
import sys


def last_epoch_checkpoints(directory, n):
    found = []
    for f in os.listdir(directory):
        m = re.fullmatch(r"checkpoint(\d+)\.pt", f)
        if m:
            found.append((int(m.group(1)), os.path.join(directory, f)))
    found.sort()
    if not found:
        sys.exit(f"average: no checkpointN.pt files in {directory}")
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
        if v.is_floating_point():
            avg[k] = (v / len(paths)).to(first["model"][k].dtype)
    first["model"] = avg
    return first


def main(argv=None):
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--last", type=int, default=10)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    paths = last_epoch_checkpoints(a.dir, a.last)
    print(f"[average] {len(paths)} checkpoints: {', '.join(os.path.basename(p) for p in paths)}", file=sys.stderr)
    torch.save(average(paths), a.out)
    print(a.out)


if __name__ == "__main__":
    main()
