"""An independent float64 reference of the loss in docs/design.md ("The loss"), written from its table
(not from the package's code): one token at a time over full probability
vectors, the bonus built piece by piece, gradients by autograd."""
import math

import torch


def bonus_value(p, bonus, log_end, gamma, start):
    """B_s(p) for a float64 tensor p (elementwise)."""

    def raw(x):
        if bonus == "log":
            if log_end == 1.0:
                return torch.log(torch.clamp(1.0 - x, min=1e-5))
            inside = torch.log(1.0 - torch.minimum(x, torch.tensor(log_end, dtype=x.dtype)))
            tangent = math.log(1.0 - log_end) - (x - log_end) / (1.0 - log_end)
            return torch.where(x <= log_end, inside, tangent)
        if bonus == "power":
            return -(x ** gamma)
        if bonus == "cos":
            return torch.cos(math.pi * x) - 1.0
        if bonus == "none":
            return torch.zeros_like(x)
        raise ValueError(bonus)

    if start == 0.0:
        return raw(p)
    b_s = raw(torch.tensor([start], dtype=torch.float64))[0]
    return torch.where(p >= start, raw(p) - b_s, torch.zeros_like(p))


def el_reference(logits, target, *, label_smoothing=0.0, log_end=0.5, bonus="log", bonus_weight=1.0,
                 bonus_gamma=None, bonus_start=0.0, bonus_smoothing=None, ignore_index=-100):
    """Per-token (loss, nll, weighted bonus) in float64, shape target.shape;
    differentiable w.r.t. ``logits`` (which it upcasts)."""
    V = logits.shape[-1]
    z = logits.double().reshape(-1, V)
    t = target.reshape(-1)
    eps = label_smoothing
    lam = eps if bonus_smoothing is None else bonus_smoothing
    losses, nlls, bonuses = [], [], []
    for i in range(z.shape[0]):
        if int(t[i]) == ignore_index:
            zero = z[i].sum() * 0.0
            losses.append(zero), nlls.append(zero.detach()), bonuses.append(zero.detach())
            continue
        y = int(t[i])
        logp = z[i] - torch.logsumexp(z[i], 0)
        p = torch.exp(logp)
        q = torch.full((V,), eps / (V - 1), dtype=torch.float64)
        q[y] = 1.0 - eps
        qb = torch.full((V,), lam / (V - 1), dtype=torch.float64)
        qb[y] = 1.0 - lam
        # a class of weight 0 adds 0, also where its log p is −inf
        ce = -torch.where(q > 0, q * logp, 0.0).sum()
        b = bonus_weight * torch.where(qb > 0, qb * bonus_value(p, bonus, log_end, bonus_gamma, bonus_start), 0.0).sum()
        losses.append(ce + b)
        nlls.append(-logp[y].detach())
        bonuses.append(b.detach())
    shape = target.shape
    return torch.stack(losses).reshape(shape), torch.stack(nlls).reshape(shape), torch.stack(bonuses).reshape(shape)


def reduce(x, target, reduction, ignore_index=-100):
    if reduction == "none":
        return x
    if reduction == "sum":
        return x.sum()
    n = int((target != ignore_index).sum())
    return x.sum() / max(n, 1)
