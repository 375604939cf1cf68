"""Inputs shared by several test files."""
import torch

from wce_fairseq.ops.bonus import BonusSpec

SPECS = [
    BonusSpec(label_smoothing=0.1, log_end=0.5),  # the paper's bonus: the branch-free fast path
    BonusSpec(label_smoothing=0.1, log_end=1.0),  # the clamp: general path
    BonusSpec(label_smoothing=0.1, bonus="power", bonus_gamma=0.5, bonus_start=0.2),
    BonusSpec(label_smoothing=0.0),  # no smoothing: no fix-ups at all
]
SPEC_IDS = ["log-0.5", "log-1", "power-start", "no-smoothing"]


def make_inputs(shape, dtype, seed, ignore=True, scale=4.0):
    g = torch.Generator().manual_seed(seed)
    V = shape[-1]
    logits = (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    target = torch.randint(0, V, shape[:-1], generator=g)
    if ignore and target.numel() > 2:
        target.view(-1)[1] = -100
    # make a few rows confidently right (p → 1), where the bonus matters most
    flat, tf = logits.view(-1, V), target.view(-1)
    for r in range(0, flat.shape[0], 3):
        if tf[r] >= 0:
            flat[r, tf[r]] = 12.0
    return logits, target


def confident_rows(N=40, V=301, seed=0, pad_every=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, V, generator=g) * 3
    t = torch.randint(0, V, (N,), generator=g)
    z[::3].scatter_(1, t[::3, None], 25.0)  # confidently right
    z[1::5, 7] += 30.0  # confidently wrong (unless 7 is the target)
    if pad_every:
        t[::pad_every] = -100
    return z, t
