"""Plots that show what the encouraging loss does (PNG, matplotlib).

    # bonus curves B(p) for several LE
    python -m wce_fairseq.tools.plots bonus --out bonus_curves.png
    # training / validation curves from fairseq logs (json or simple format)
    python -m wce_fairseq.tools.plots curves --log "LS-CE=runs/base/train.log" --log "EL=runs/el/train.log" --out curves.png
    # histogram of target-token probabilities on a data split, per checkpoint
    python -m wce_fairseq.tools.plots hist DATA_BIN --ckpt "LS-CE=runs/base/checkpoint_best.pt" \
        --ckpt "EL=runs/el/checkpoint_best.pt" --subset valid --out hist.png
"""
import argparse
import contextlib
import json
import logging
import os
import re
import sys
import warnings

CURVE_KEYS = [("loss", "loss (bits)"), ("nll_loss", "nll loss (bits)"), ("target_prob", "mean target probability"),
              ("well_classified", "share of tokens with p > 0.5"), ("margin", "mean logit margin")]


@contextlib.contextmanager
def _quiet():
    log = logging.getLogger("fairseq")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def _plt():
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq may set the root logger to DEBUG/INFO
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, out, dpi):
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def plot_bonus(out, log_ends=(0.5, 0.75, 0.9, 1.0)):
    import torch

    from wce_fairseq.ops.bonus import BonusSpec

    plt = _plt()
    p = torch.linspace(0, 0.9995, 2000, dtype=torch.float64)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    ce = -torch.log(p.clamp_min(1e-12))
    a1.plot(p, ce, "k--", label="CE: -log p")
    for le in log_ends:
        b, d = BonusSpec(log_end=le).curve(p, 1 - p)
        a1.plot(p, b, label=f"bonus log(1-p), LE={le:g}")
        a2.plot(p, (-1 / p.clamp_min(1e-12)) + d / p.clamp_min(1e-12), label=f"CE + bonus, LE={le:g}")
    a2.plot(p, -1 / p.clamp_min(1e-12), "k--", label="CE alone")
    a1.set(xlabel="target probability p", ylabel="value", title="Loss terms", ylim=(-8, 5))
    a2.set(xlabel="target probability p", ylabel="d loss / d p", title="Gradient w.r.t. p", ylim=(-15, 0))
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    return _save(plt, fig, out, 120)


_SIMPLE = re.compile(r"\| (train|valid) \| epoch (\d+) \|(.*)$")


def parse_log_lines(lines):
    """Per-epoch {'train': [...], 'valid': [...]} records from fairseq log
    lines: ``--log-format json`` on the console (``| train | {...}``), in a
    ``--log-file`` (bare ``{...}`` lines), hydra's ``[train][INFO] - {...}``,
    or ``--log-format simple``. Keys lose their ``train_``/``valid_`` prefix;
    a repeated epoch keeps its last record."""
    recs = {"train": {}, "valid": {}}
    for line in lines:
        if "{" in line and "train_inner" not in line:
            try:
                r = json.loads(line[line.index("{"):])
            except ValueError:
                continue
            for kind in ("train", "valid"):
                if f"{kind}_loss" in r:
                    recs[kind][int(r["epoch"])] = {
                        k[len(kind) + 1:] if k.startswith(kind + "_") else k: v for k, v in r.items()}
            continue
        m = _SIMPLE.search(line)
        if m:
            r = {"epoch": int(m.group(2))}
            for part in m.group(3).split("|"):
                bits = part.strip().split(" ", 1)
                if len(bits) == 2:
                    r[bits[0]] = bits[1]
            recs[m.group(1)][r["epoch"]] = r
    return {k: [v[e] for e in sorted(v)] for k, v in recs.items()}


def read_log(path):
    with open(path, encoding="utf-8") as f:
        return parse_log_lines(f)


def plot_curves(logs, out):
    plt = _plt()
    fig, axes = plt.subplots(1, len(CURVE_KEYS), figsize=(4 * len(CURVE_KEYS), 3.6))
    for i, (name, path) in enumerate(logs):
        recs = read_log(path)
        color = f"C{i}"  # one colour per run, solid = train, dashed = valid
        for ax, (key, title) in zip(axes, CURVE_KEYS):
            for kind, style in (("train", "-"), ("valid", "--")):
                pts = [(int(r["epoch"]), float(r[key])) for r in recs[kind] if key in r]
                if pts:
                    ax.plot(*zip(*pts), style, color=color, marker=".", label=f"{name} {kind}")
            ax.set(title=title, xlabel="epoch")
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(plt, fig, out, 110)


def target_probs(data, ckpt, subset="valid", max_tokens=4096, user_dir=None):
    """Target-token probabilities of a checkpoint on ``subset`` (teacher forcing)."""
    import torch
    from fairseq import checkpoint_utils, utils

    import wce_fairseq

    wce_fairseq.register()
    with _quiet():  # fairseq logs every file it loads; torch warns about padding masks
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([ckpt], arg_overrides={"data": data})
        model = models[0].eval()
        task.load_dataset(subset)
        itr = task.get_batch_iterator(dataset=task.dataset(subset), max_tokens=max_tokens,
                                      max_positions=utils.resolve_max_positions(task.max_positions(),
                                                                                model.max_positions())
                                      ).next_epoch_itr(shuffle=False)
    out = []
    pad = task.target_dictionary.pad()
    with torch.no_grad(), _quiet():
        for sample in itr:
            net = model(**sample["net_input"])
            lp = model.get_normalized_probs(net, log_probs=True)
            t = sample["target"]
            p = lp.gather(-1, t.unsqueeze(-1)).squeeze(-1).exp()
            out.append(p[t.ne(pad)])
    return torch.cat(out)


def plot_hist(data, ckpts, out, subset="valid"):
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 41)
    for name, path in ckpts:
        p = target_probs(data, path, subset).numpy()
        ax.hist(p, bins=bins, histtype="step", linewidth=1.5,
                label=f"{name}: mean p={p.mean():.3f}, p>0.5: {100 * (p > 0.5).mean():.1f}%")
    ax.set(xlabel="probability of the reference token", ylabel="tokens", yscale="log",
           title=f"Target-token probability on {subset}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(plt, fig, out, 110)


def _pairs(items, what):
    out = []
    for it in items:
        if "=" not in it:
            sys.exit(f"plots: {what} must be NAME=PATH; got {it!r}")
        name, path = it.split("=", 1)
        if not os.path.exists(path):
            sys.exit(f"plots: {what} file not found: {path}")
        out.append((name, path))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bonus", help="bonus curves for several LE")
    b.add_argument("--out", default="bonus_curves.png")
    b.add_argument("--log-end", type=float, nargs="+", default=[0.5, 0.75, 0.9, 1.0])
    c = sub.add_parser("curves", help="training/validation curves from fairseq logs")
    c.add_argument("--log", action="append", required=True, metavar="NAME=PATH")
    c.add_argument("--out", default="curves.png")
    h = sub.add_parser("hist", help="target-probability histograms from checkpoints")
    h.add_argument("data")
    h.add_argument("--ckpt", action="append", required=True, metavar="NAME=PATH")
    h.add_argument("--subset", default="valid")
    h.add_argument("--out", default="target_prob_hist.png")
    a = ap.parse_args(argv)
    if a.cmd == "bonus":
        print(plot_bonus(a.out, a.log_end))
    elif a.cmd == "curves":
        print(plot_curves(_pairs(a.log, "--log"), a.out))
    else:
        print(plot_hist(a.data, _pairs(a.ckpt, "--ckpt"), a.out, a.subset))


if __name__ == "__main__":
    main()
