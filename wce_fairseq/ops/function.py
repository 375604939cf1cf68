"""The forward and backward that the fused implementations share, and the
autograd function that runs them eagerly. Each implementation is a *kernel*
object with

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

:func:`kernel_forward` and :func:`kernel_backward` are those two steps with
the reduction; :class:`EncouragingLossFunction` runs them in eager mode,
where the gradient may be written over the logits (``inplace_backward``);
``ops/library.py`` registers the same two steps as ``torch.library``
operators for compiled graphs, where nothing may be written over an input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch

from .bonus import BonusSpec
from .common import Diagnostics, ELResult, RowState, Targets, grad_scale, prepare_targets, reduce_tokens, upstream_rows


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


class Forward(NamedTuple):
    """:func:`kernel_forward`'s result: the reduced loss parts, the
    diagnostics as one float64 vector (empty without), and what backward
    needs: the gradient formed at once, or the row state."""

    loss: torch.Tensor
    nll: torch.Tensor
    bonus: torch.Tensor
    stats: torch.Tensor
    grad: Optional[torch.Tensor]
    rows: Optional[RowState]


def forms_gradient_at_once(kernel, z, need_grad: bool, options: ImplOptions) -> bool:
    return need_grad and kernel.eager_gradient(z, bool(options.sync_free))


def kernel_forward(kernel, z, targets: Targets, spec: BonusSpec, reduction: str, want_stats: bool, need_grad: bool,
                   options: ImplOptions) -> Forward:
    """Forward of ``z [N, V]``; with ``need_grad`` it keeps what backward needs."""
    eager = forms_gradient_at_once(kernel, z, need_grad, options)
    out = kernel.forward(z, targets, spec, want_stats=want_stats,
                         grad_scale=grad_scale(targets, reduction) if eager else None,
                         save_rows=need_grad and not eager, inplace=options.inplace_backward, **options.kernel_kwargs())
    loss, nll, bonus = (reduce_tokens(x, targets.n_valid, reduction) for x in out[:3])
    stats = out.stats.vector() if out.stats is not None else torch.zeros(0, dtype=torch.float64, device=z.device)
    return Forward(loss, nll, bonus, stats, out.grad, out.rows)


def kernel_backward(kernel, z, targets: Targets, spec: BonusSpec, reduction: str, g_loss, fwd: Forward,
                    options: ImplOptions):
    """The logits' gradient for the upstream gradient ``g_loss``: the one
    formed in forward scaled by it, else written from the row state."""
    if fwd.grad is not None:
        return scaled_by_upstream(fwd.grad, g_loss, reduction)
    rows = upstream_rows(g_loss, z.shape[0]) * grad_scale(targets, reduction)
    return kernel.backward(z, targets, spec, fwd.rows, rows, inplace=options.inplace_backward,
                           **options.kernel_kwargs())


def scaled_by_upstream(grad, g_loss, reduction):
    """A gradient formed in forward (the CPU) times the upstream gradient (per
    token for reduction 'none'), in place, and skipped for a unit upstream
    gradient."""
    if reduction == "none":
        grad.mul_(g_loss.to(grad.dtype).unsqueeze(1))
    elif g_loss.numel() != 1 or float(g_loss) != 1.0:
        grad.mul_(g_loss.to(grad.dtype))
    return grad


def once_differentiable(grad: torch.Tensor, name: str, logits: Optional[torch.Tensor]) -> torch.Tensor:
    """``grad`` as the result of a backward that cannot itself be
    differentiated: a second derivative taken through it (``create_graph=True``,
    then a backward through the gradient) raises a clear error naming why.
    The error node hangs from the ``logits``, so a derivative with respect to
    them reaches it."""
    if not torch.is_grad_enabled():
        return grad
    msg = (f"the {name} encouraging loss has an analytic first derivative only: a second derivative (double "
           "backward) is not supported; use impl='reference' (autograd over the float64 formula) for higher "
           "derivatives")
    inputs = [grad.detach().requires_grad_(True)] + ([logits] if logits is not None and logits.requires_grad else [])
    out = torch._C._functions.DelayedError(msg, len(inputs))(*inputs)
    return out[0] if len(inputs) > 1 else out  # one input: the tensor itself, not a tuple


class EncouragingLossFunction(torch.autograd.Function):
    """Eager mode: forward and backward of a kernel, the gradient written over
    the logits with ``inplace_backward``."""

    @staticmethod
    def forward(ctx, z, target, kernel, spec: BonusSpec, ignore_index: int, reduction: str, want_stats: bool,
                options: ImplOptions):
        targets = prepare_targets(target, z.shape[1], ignore_index)
        fwd = kernel_forward(kernel, z, targets, spec, reduction, want_stats, ctx.needs_input_grad[0], options)
        ctx.kernel, ctx.spec, ctx.options, ctx.reduction = kernel, spec, options, reduction
        # what backward needs, not the outputs (a ctx holding its own outputs would be a reference cycle)
        ctx.z, ctx.targets, ctx.fwd = z, targets, fwd._replace(loss=None, nll=None, bonus=None, stats=None)
        ctx.mark_non_differentiable(fwd.nll, fwd.bonus, fwd.stats)
        return fwd.loss, fwd.nll, fwd.bonus, fwd.stats

    @staticmethod
    def backward(ctx, g_loss, *unused):
        if ctx.fwd is None:
            raise RuntimeError(f"the {ctx.kernel.name} encouraging loss keeps what its gradient needs for one "
                               "backward pass only")
        with torch.no_grad():  # also under create_graph=True: the analytic gradient has no graph of its own
            grad = kernel_backward(ctx.kernel, ctx.z, ctx.targets, ctx.spec, ctx.reduction, g_loss, ctx.fwd,
                                   ctx.options)
        grad = once_differentiable(grad, ctx.kernel.name, ctx.z)
        ctx.z = ctx.fwd = None
        return grad, None, None, None, None, None, None, None


def el_forward(kernel, logits, target, spec: BonusSpec, ignore_index: int, reduction: str, want_stats: bool,
               options: ImplOptions) -> ELResult:
    """The loss of ``logits [..., V]`` through ``kernel`` in eager mode,
    shaped like ``target`` for reduction 'none'."""
    V = logits.size(-1)
    z = logits.reshape(-1, V)
    if not z.is_contiguous():
        z = z.contiguous()
    t = target.reshape(-1)
    options = options.for_tensor(z)
    if torch.is_grad_enabled() and logits.requires_grad:
        loss, nll, bonus, vec = EncouragingLossFunction.apply(z, t, kernel, spec, ignore_index, reduction,
                                                               want_stats, options)
    else:
        with torch.no_grad():
            fwd = kernel_forward(kernel, z, prepare_targets(t, V, ignore_index), spec, reduction, want_stats, False,
                                 options)
            loss, nll, bonus, vec = fwd[:4]
    return shaped_result(loss, nll, bonus, vec, target, reduction, want_stats)


def shaped_result(loss, nll, bonus, stats_vector, target, reduction: str, want_stats: bool) -> ELResult:
    if reduction == "none":
        loss, nll, bonus = loss.view(target.shape), nll.view(target.shape), bonus.view(target.shape)
    return ELResult(loss, nll, bonus, Diagnostics(*stats_vector.unbind()) if want_stats else None)
