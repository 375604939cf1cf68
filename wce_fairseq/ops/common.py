"""Pieces shared by every implementation: input checks, reduction, diagnostics."""
from __future__ import annotations

from typing import NamedTuple

import torch

from .bonus import REDUCTIONS, ELConfigError

# Input dtypes whose gradient is formed in fp32 with the upstream gradient
# folded in, then cast once (not formed in the input dtype and scaled later).
LOW_PRECISION = (torch.float16, torch.bfloat16)

# Diagnostics, summed over the non-ignored tokens, in this order (float64).
STAT_NAMES = ("n_tokens", "sum_target_prob", "n_well_classified", "sum_margin", "n_correct")


class ELResult(NamedTuple):
    """What every implementation returns.

    ``loss`` is differentiable; ``nll_loss`` (−log p_target) and ``bonus_loss``
    (ρ Σ q' B, already weighted) are detached and reduced like ``loss``;
    ``stats`` is a float64 vector named by ``STAT_NAMES`` (or None).
    """

    loss: torch.Tensor
    nll_loss: torch.Tensor
    bonus_loss: torch.Tensor
    stats: torch.Tensor | None


def check_inputs(logits: torch.Tensor, target: torch.Tensor, reduction: str, ignore_index: int = -100):
    if reduction not in REDUCTIONS:
        raise ELConfigError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
    if logits.dim() < 1:
        raise ValueError("logits must have a class dimension")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point; got {logits.dtype}")
    if logits.size(-1) < 2:
        raise ValueError(f"the vocabulary (last dimension of logits) must have at least 2 classes; got {logits.size(-1)}")
    if target.shape != logits.shape[:-1]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)} minus the class dim")
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"target must be an integer tensor; got {target.dtype}")
    check_target_range(target, logits.size(-1), ignore_index)


def check_target_range(target: torch.Tensor, V: int, ignore_index: int) -> None:
    """Class ids outside [0, V) that are not ``ignore_index`` would be read out
    of bounds by a kernel: refuse them, as ``gather`` would (one host sync)."""
    if target.numel() == 0:
        return
    bad = ((target < 0) | (target >= V)) & (target != ignore_index)
    if bool(bad.any()):
        first = target[bad][0].item()
        raise IndexError(f"target holds class id {first}, outside [0, {V}) and not ignore_index ({ignore_index})")


def reduce_tokens(per_token: torch.Tensor, n_valid: torch.Tensor, reduction: str) -> torch.Tensor:
    """Sum / mean over tokens (ignored ones hold 0). An all-ignored batch has
    mean 0 (not 0/0), so it never produces a NaN."""
    if reduction == "none":
        return per_token
    total = per_token.sum()
    if reduction == "sum":
        return total
    return total / n_valid.clamp_min(1).to(total.dtype)


def finish_forward(ctx, per_token, stats, n_valid, reduction, device):
    """Reduce (loss, nll, bonus) and mark all but the loss non-differentiable:
    the tail of every implementation's ``autograd.Function.forward``."""
    out = [reduce_tokens(x, n_valid, reduction) for x in per_token]
    if stats is None:
        stats = torch.zeros(0, dtype=torch.float64, device=device)
    ctx.mark_non_differentiable(out[1], out[2], stats)
    return out[0], out[1], out[2], stats


def take_saved_grad(ctx, g_loss, impl: str) -> torch.Tensor:
    """The gradient produced during forward, scaled in place by the upstream
    gradient (per token for reduction 'none'). Usable for one backward only."""
    grad = ctx.grad
    if grad is None:
        raise RuntimeError(f"the {impl} encouraging loss keeps its gradient for one backward pass only")
    ctx.grad = None
    if ctx.reduction == "none":
        grad.mul_(g_loss.to(grad.dtype).unsqueeze(1))
    elif g_loss.numel() != 1 or float(g_loss) != 1.0:
        grad.mul_(g_loss.to(grad.dtype))
    return grad


def upstream_rows(g_loss: torch.Tensor, n: int) -> torch.Tensor:
    """The upstream gradient as one contiguous fp32 factor per row."""
    g = g_loss.detach().to(torch.float32).reshape(-1)
    return g.expand(n).contiguous() if g.numel() == 1 else g.contiguous()


@torch.no_grad()
def token_stats(z, t, lp_t, valid, top2=None, best_other=None) -> torch.Tensor:
    """Diagnostics for rows ``z`` ([n, V], V >= 2) with safe targets ``t``:
    target probability, p > 0.5, logit margin (target minus best other) and
    argmax correctness, summed over ``valid`` rows. ``top2`` is
    ``z.topk(2, dim=-1)`` when the caller already has it: the best logit other
    than the target is the first of the two unless the target is the argmax,
    so no row is copied and nothing waits for the device. Or ``best_other``
    itself, when the caller found it in its own pass (the argmax is then the
    target exactly when the target logit is above every other)."""
    z_t = z.gather(-1, t.unsqueeze(-1)).squeeze(-1)
    if best_other is not None:
        correct = z_t > best_other
    else:
        if top2 is None:
            top2 = z.topk(2, dim=-1)
        vals, idx = top2
        correct = idx[..., 0] == t
        best_other = torch.where(correct, vals[..., 1], vals[..., 0])
    p_t = lp_t.exp()
    margin = z_t - best_other
    v = valid.to(torch.float64)
    return torch.stack(
        [
            v.sum(),
            (p_t.double() * v).sum(),
            ((p_t > 0.5).double() * v).sum(),
            (margin.double() * v).sum(),
            (correct.double() * v).sum(),
        ]
    )
