"""The autograd function and the forward wrapper that the fused
implementations share. Each implementation is a *kernel* object with

* ``forward(z, targets, spec, *, want_stats, grad_scale, save_rows, ...)``:
  per-token loss parts, diagnostics, the per-row state backward needs, and
  the gradient itself where ``grad_scale`` is given;
* ``backward(z, targets, spec, rows, grad_scale, ...)``: the gradient from the
  saved row state, one read and one write of the logits;
* ``eager_gradient(z, sync_free)``: whether forward should form the gradient
  at once (the chunked path for fp32 logits on the CPU, while each chunk is
  in cache), to be scaled by the upstream gradient in backward.

Everywhere else the gradient is formed in backward, where the upstream
gradient is known: it is folded in, in fp32, before the one cast to the
logits' dtype (a loss scale of up to 2^16 under mixed precision would
overflow or flush an fp16 gradient formed first), and nothing is read back
by the host.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .bonus import BonusSpec
from .common import Diagnostics, ELResult, grad_scale, prepare_targets, reduce_tokens, upstream_rows


@dataclass(frozen=True)
class ImplOptions:
    """Options of the fused implementations (``impl_options`` of the functional API)."""

    inplace_backward: bool = False  # write the gradient over the logits (nothing may read them afterwards)
    chunk_rows: Optional[int] = None  # chunked: rows per chunk (default: 4 MiB of fp32 per chunk)
    sync_free: Optional[bool] = None  # the device code path (no host reads); default: on for CUDA tensors

    def for_tensor(self, z: torch.Tensor) -> "ImplOptions":
        return ImplOptions(self.inplace_backward, self.chunk_rows, z.is_cuda if self.sync_free is None else self.sync_free)

    def kernel_kwargs(self) -> dict:
        return dict(sync_free=bool(self.sync_free), chunk_rows=self.chunk_rows)


class EncouragingLossFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, target, kernel, spec: BonusSpec, ignore_index: int, reduction: str, want_stats: bool,
                options: ImplOptions):
        targets = prepare_targets(target, z.shape[1], ignore_index)
        scale = grad_scale(targets, reduction)
        eager = ctx.needs_input_grad[0] and kernel.eager_gradient(z, options.sync_free)
        out = kernel.forward(z, targets, spec, want_stats=want_stats, grad_scale=scale if eager else None,
                             save_rows=ctx.needs_input_grad[0] and not eager, inplace=options.inplace_backward,
                             **options.kernel_kwargs())
        ctx.kernel, ctx.spec, ctx.options, ctx.reduction = kernel, spec, options, reduction
        ctx.z, ctx.targets, ctx.scale, ctx.rows, ctx.grad = z, targets, scale, out.rows, out.grad
        loss, nll, bonus = (reduce_tokens(x, targets.n_valid, reduction) for x in out[:3])
        stats = out.stats.vector() if out.stats is not None else torch.zeros(0, dtype=torch.float64, device=z.device)
        ctx.mark_non_differentiable(nll, bonus, stats)
        return loss, nll, bonus, stats

    @staticmethod
    def backward(ctx, g_loss, *unused):
        if ctx.grad is None and ctx.rows is None:
            raise RuntimeError(f"the {ctx.kernel.name} encouraging loss keeps what its gradient needs for one "
                               "backward pass only")
        if ctx.grad is not None:
            grad = _scaled_by_upstream(ctx.grad, g_loss, ctx.reduction)
        else:
            rows = upstream_rows(g_loss, ctx.z.shape[0]) * ctx.scale
            grad = ctx.kernel.backward(ctx.z, ctx.targets, ctx.spec, ctx.rows, rows,
                                       inplace=ctx.options.inplace_backward, **ctx.options.kernel_kwargs())
        ctx.z = ctx.grad = ctx.rows = None
        return grad, None, None, None, None, None, None, None


def _scaled_by_upstream(grad, g_loss, reduction):
    """A gradient formed in forward (the CPU), scaled in place by the upstream
    gradient (per token for reduction 'none')."""
    if reduction == "none":
        grad.mul_(g_loss.to(grad.dtype).unsqueeze(1))
    elif g_loss.numel() != 1 or float(g_loss) != 1.0:
        grad.mul_(g_loss.to(grad.dtype))
    return grad


def el_forward(kernel, logits, target, spec: BonusSpec, ignore_index: int, reduction: str, want_stats: bool,
               options: ImplOptions) -> ELResult:
    """The loss of ``logits [..., V]`` through ``kernel``, shaped like ``target``
    for reduction 'none'."""
    V = logits.size(-1)
    z = logits.reshape(-1, V)
    if not z.is_contiguous():
        z = z.contiguous()
    t = target.reshape(-1)
    options = options.for_tensor(z)
    if torch.is_grad_enabled() and logits.requires_grad:
        loss, nll, bonus, vec = EncouragingLossFunction.apply(z, t, kernel, spec, ignore_index, reduction,
                                                               want_stats, options)
        stats = Diagnostics(*vec.unbind()) if want_stats else None
    else:
        with torch.no_grad():
            targets = prepare_targets(t, V, ignore_index)
            out = kernel.forward(z, targets, spec, want_stats=want_stats, **options.kernel_kwargs())
            loss, nll, bonus = (reduce_tokens(x, targets.n_valid, reduction) for x in out[:3])
            stats = out.stats
    if reduction == "none":
        loss, nll, bonus = loss.view(target.shape), nll.view(target.shape), bonus.view(target.shape)
    return ELResult(loss, nll, bonus, stats)
