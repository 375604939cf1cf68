"""Run an implementation once on a small batch against an independent
float64 computation of the loss.

The batch exercises what can go wrong in a kernel: several column blocks,
a target probability in the middle of the log curve (p = 0.6), on its
tangent (p = 0.9, LE = 0.75) and saturated (p -> 1, the exact 1 − p path),
a confidently wrong argmax and a wrong argmax at p = 0.7, the argmax in the
last block, an ignored row, smoothing on both terms; fp32 logits with a
unit upstream gradient, then fp16 logits under a loss scale of 2^10 with
``reduction="mean"``: loss, parts, diagnostics and gradient.

The computation it is checked against (:func:`check_loss`) is written here
from the formula for this one setting (conservative log bonus, LE = 0.75,
ε = λ = 0.1, ρ = 1.5), over full probability vectors in float64 with
autograd — it shares no code with any implementation, the package's
``reference`` included.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .bonus import BonusSpec

EPS, LOG_END, RHO = 0.1, 0.75, 1.5
IGNORED = -100


def _with_target_probability(row: torch.Tensor, t: int, p: float, col: Optional[int] = None) -> None:
    """Set ``row[col]`` (the target's by default) so that its softmax probability is ``p``."""
    col = t if col is None else col
    others = torch.cat([row[:col], row[col + 1:]])
    row[col] = math.log(p / (1.0 - p)) + torch.logsumexp(others, 0)


def check_problem(device: torch.device):
    g = torch.Generator().manual_seed(1234)
    N, V = 10, (5000 if device.type == "cuda" else 1100)
    z = torch.randn(N, V, generator=g, dtype=torch.float64) * 3.0
    t = torch.randint(0, V, (N,), generator=g)
    z[0, t[0]] += 25.0  # p_t -> 1: the tangent, and 1 - p from the other entries
    z[1, t[1]] += 4.0
    z[2, (int(t[2]) + 7) % V] += 25.0  # confidently wrong
    z[3, V - 1] += 30.0  # argmax in the last block
    t[4] = IGNORED
    _with_target_probability(z[5], int(t[5]), 0.6)  # the middle of the log curve
    _with_target_probability(z[6], int(t[6]), 0.9)  # on the tangent, not saturated
    _with_target_probability(z[7], int(t[7]), 0.7, col=(int(t[7]) + 3) % V)  # a wrong argmax at p = 0.7
    spec = BonusSpec(label_smoothing=EPS, log_end=LOG_END, bonus_weight=RHO)
    return z.float().to(device), t.to(device), spec


def check_loss(z: torch.Tensor, t: torch.Tensor, reduction: str):
    """(loss, nll, bonus, diagnostics) of the check's setting in float64,
    differentiable with respect to ``z`` (float64, on the CPU)."""
    V = z.shape[1]
    losses, nlls, bonuses, stats = [], [], [], torch.zeros(5, dtype=torch.float64)
    for i in range(z.shape[0]):
        y = int(t[i])
        if y == IGNORED:
            continue
        lp = torch.log_softmax(z[i], 0)
        p = lp.exp()
        q = torch.full((V,), EPS / (V - 1), dtype=torch.float64)
        q[y] = 1.0 - EPS
        ce = -(q * lp).sum()
        # the conservative log bonus: log(1 - p) up to LE, then its tangent
        capped = torch.minimum(p, torch.tensor(LOG_END, dtype=torch.float64))
        b = torch.log(1.0 - capped) - torch.clamp(p - LOG_END, min=0.0) / (1.0 - LOG_END)
        bonus = RHO * (q * b).sum()
        losses.append(ce + bonus)
        nlls.append(-lp[y].detach())
        bonuses.append(bonus.detach())
        with torch.no_grad():
            best_other = torch.cat([z[i, :y], z[i, y + 1:]]).max()
            stats += torch.tensor([1.0, float(p[y]), float(p[y] > 0.5), float(z[i, y] - best_other),
                                   float(z[i, y] > best_other)], dtype=torch.float64)
    n = max(len(losses), 1)

    def red(xs):
        total = torch.stack(xs).sum()
        return total / n if reduction == "mean" else total

    return red(losses), red(nlls), red(bonuses), stats


def compare_with_reference(run: Callable, device: torch.device) -> Optional[str]:
    """None when ``run(logits, target, spec, reduction)`` (an ``ELResult``
    with diagnostics) agrees with :func:`check_loss` on ``device``, else the
    first difference."""
    z, t, spec = check_problem(device)
    for dtype, reduction, upstream, tol in ((torch.float32, "sum", 1.0, 1e-5), (torch.float16, "mean", 1024.0, 2e-3)):
        zin = z.to(dtype)
        x = zin.clone().requires_grad_(True)
        got = run(x, t, spec, reduction)
        got.loss.backward(torch.tensor(upstream, device=device))
        xr = zin.double().cpu().requires_grad_(True)
        loss, nll, bonus, stats = check_loss(xr, t.cpu(), reduction)
        (loss * upstream).backward()
        pairs = (("loss", got.loss, loss), ("nll", got.nll_loss, nll), ("bonus", got.bonus_loss, bonus),
                 ("stats", got.stats.vector(), stats))
        for name, a, b in pairs:
            a, b = a.detach().double().cpu(), b.detach().double()
            if not torch.allclose(a, b, rtol=1e-4, atol=1e-4):
                return f"{name} ({dtype}) differs from the float64 check ({a.tolist()} vs {b.tolist()})"
        g, gr = x.grad.double().cpu(), xr.grad
        err = float((g - gr).abs().max())
        if not (x.grad.dtype == dtype and err <= tol * max(1.0, float(gr.abs().max()))):
            return f"gradient ({dtype}, upstream {upstream:g}) differs from the float64 check by {err:.3g}"
    return None
