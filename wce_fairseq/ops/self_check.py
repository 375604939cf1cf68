"""Run an implementation once on a small batch against the float64 reference.

The batch exercises what can go wrong in a kernel: several column blocks,
confident right and wrong rows (the tangent and the exact 1 − p paths), a
padding row, smoothing on both terms; fp32 logits with a unit upstream
gradient, then fp16 logits under a loss scale of 2^10 with
``reduction="mean"``: loss, parts, diagnostics and gradient.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .bonus import BonusSpec
from .reference import reference_forward


def check_problem(device: torch.device):
    g = torch.Generator().manual_seed(1234)
    N, V = 9, (5000 if device.type == "cuda" else 1100)
    z = torch.randn(N, V, generator=g, dtype=torch.float64) * 3.0
    t = torch.randint(0, V, (N,), generator=g)
    z[0, t[0]] += 25.0  # p_t -> 1
    z[1, t[1]] += 4.0
    z[2, (int(t[2]) + 7) % V] += 25.0  # confidently wrong
    z[3, V - 1] += 30.0  # argmax in the last block
    t[4] = -100  # padding
    spec = BonusSpec(label_smoothing=0.1, log_end=0.75, bonus_weight=1.5)
    return z.float().to(device), t.to(device), spec


def compare_with_reference(run: Callable, device: torch.device) -> Optional[str]:
    """None when ``run(logits, target, spec, reduction)`` (an ``ELResult``
    with diagnostics) agrees with the reference on ``device``, else the first
    difference."""
    z, t, spec = check_problem(device)
    for dtype, reduction, upstream, tol in ((torch.float32, "sum", 1.0, 1e-5), (torch.float16, "mean", 1024.0, 2e-3)):
        zin = z.to(dtype)
        x = zin.clone().requires_grad_(True)
        got = run(x, t, spec, reduction)
        got.loss.backward(torch.tensor(upstream, device=device))
        xr = zin.double().cpu().requires_grad_(True)
        ref = reference_forward(xr, t.cpu(), spec, -100, reduction, True)
        (ref.loss * upstream).backward()
        pairs = (("loss", got.loss, ref.loss), ("nll", got.nll_loss, ref.nll_loss),
                 ("bonus", got.bonus_loss, ref.bonus_loss), ("stats", got.stats.vector(), ref.stats.vector()))
        for name, a, b in pairs:
            a, b = a.detach().double().cpu(), b.detach().double()
            if not torch.allclose(a, b, rtol=1e-4, atol=1e-4):
                return f"{name} ({dtype}) differs from the float64 reference ({a.tolist()} vs {b.tolist()})"
        g, gr = x.grad.double().cpu(), xr.grad
        err = float((g - gr).abs().max())
        if not (x.grad.dtype == dtype and err <= tol * max(1.0, float(gr.abs().max()))):
            return f"gradient ({dtype}, upstream {upstream:g}) differs from the float64 reference by {err:.3g}"
    return None
