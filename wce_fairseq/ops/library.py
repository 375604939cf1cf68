"""The loss as ``torch.library`` operators, which is how it runs inside
``torch.compile`` (and ``torch.export``) graphs.

Dynamo does not trace into an operator: the chunk loop, the host-side
target check and the kernel launches stay out of the graph, which therefore
has no break inside the loss, compiles in seconds and runs the same code as
eager mode. Each operator has a fake (meta) implementation giving its
outputs' shapes, so graphs over symbolic N and V compile once for all sizes.

* ``wce_fairseq::targets(target, V, ignore_index, deferred)``: refuses ids
  outside [0, V) that are not ignored (ops/targets.py: at once on the CPU,
  without a host read on CUDA) and returns the safe ids and the validity mask
  that every implementation starts from.
* ``wce_fairseq::chunked_forward`` / ``chunked_backward``: the chunked
  implementation (``custom_op``).
* ``wce_fairseq::triton_forward`` / ``triton_backward``: the Triton kernels
  (``triton_op`` with ``wrap_triton``, registered in ops/triton_el.py), which
  Inductor sees and schedules as kernels of its own graph.

A forward operator returns the reduced loss, nll and bonus, the diagnostics
vector, and what its backward needs: the gradient formed at once (chunked,
fp32 on the CPU) or the row state, empty where unused. Its autograd formula
(``register_autograd``) scales that gradient by the upstream one, or calls
the backward operator. The option ``inplace_backward`` (gradient written over
the logits, an eager-mode memory saving) has no place in a graph, where an
operator may not write over its inputs: there it is off.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .bonus import BonusSpec
from .chunked import ChunkedKernel
from .common import RowState, Targets, grad_scale, upstream_rows
from .function import Forward, ImplOptions, forms_gradient_at_once, kernel_forward, once_differentiable, shaped_result
from .targets import check_target_range

Tensor = torch.Tensor
NAMESPACE = "wce_fairseq"


# -- targets -------------------------------------------------------------------------
@torch.library.custom_op(f"{NAMESPACE}::targets", mutates_args=())
def targets_op(target: Tensor, V: int, ignore_index: int, deferred: bool) -> Tuple[Tensor, Tensor]:
    check_target_range(target, V, ignore_index, deferred=deferred)
    valid = (target != ignore_index) & (target >= 0) & (target < V)
    return torch.where(valid, target, torch.zeros_like(target)).long(), valid


@targets_op.register_fake
def _(target, V, ignore_index, deferred):
    return torch.empty_like(target, dtype=torch.long), torch.empty_like(target, dtype=torch.bool)


# -- what the forward and backward operators take and return ------------------------------
# the loss options, in BonusSpec's field order, then the call's
SPEC_FIELDS = ("label_smoothing", "log_end", "bonus", "bonus_weight", "bonus_gamma", "bonus_start", "bonus_smoothing")
ROW_FIELDS = RowState._fields
N_SPEC = len(SPEC_FIELDS)


def spec_args(spec: BonusSpec) -> tuple:
    return tuple(getattr(spec, f) for f in SPEC_FIELDS)


def _targets(safe, valid) -> Targets:
    return Targets(safe, valid, valid.sum())


def _forward_outputs(fwd: Forward, z) -> tuple:
    """The outputs, each a tensor of its own (an operator's outputs may not alias)."""
    rows = fwd.rows if fwd.rows is not None else RowState.empty(0, z.device)
    return (fwd.loss, fwd.nll, fwd.bonus, fwd.stats, fwd.grad if fwd.grad is not None else z.new_empty(0), *rows)


def forward_body(kernel, z, safe, valid, spec_values, reduction, want_stats, need_grad, sync_free, chunk_rows):
    """A forward operator's implementation (also the traced body of the Triton one)."""
    spec = BonusSpec(*spec_values)
    options = ImplOptions(False, chunk_rows, sync_free)
    return _forward_outputs(kernel_forward(kernel, z, _targets(safe, valid), spec, reduction, want_stats, need_grad,
                                           options), z)


def forward_fake(kernel, z, reduction, want_stats, need_grad, sync_free):
    """The shapes of a forward operator's outputs."""
    N = z.shape[0]
    f32 = dict(dtype=torch.float32, device=z.device)
    reduced = (N,) if reduction == "none" else ()
    eager = forms_gradient_at_once(kernel, z, need_grad, ImplOptions(sync_free=sync_free))
    rows_n = N if need_grad and not eager else 0
    return (z.new_empty(reduced, **f32), z.new_empty(reduced, **f32), z.new_empty(reduced, **f32),
            z.new_empty((5 if want_stats else 0,), dtype=torch.float64), z.new_empty(z.shape if eager else (0,)),
            *(z.new_empty((rows_n,), **f32) for _ in range(5)), z.new_empty((rows_n,), dtype=torch.long))


def backward_body(kernel, z, safe, valid, rows, row_scale, spec_values, sync_free, chunk_rows):
    """A backward operator's implementation: the gradient for per-row factors ``row_scale``."""
    return kernel.backward(z, _targets(safe, valid), BonusSpec(*spec_values), RowState(*rows), row_scale,
                           inplace=False, sync_free=sync_free, chunk_rows=chunk_rows)


def register_loss_autograd(forward_op, backward_op, kernel) -> None:
    """The autograd formula of ``forward_op`` (inputs: z, safe, valid, the
    loss options, reduction, want_stats, need_grad, sync_free, chunk_rows)."""

    def setup_context(ctx, inputs, output):
        z, safe, valid = inputs[:3]
        ctx.spec_values = inputs[3:3 + N_SPEC]
        ctx.reduction, _, need_grad, ctx.sync_free, ctx.chunk_rows = inputs[3 + N_SPEC:]
        ctx.eager = forms_gradient_at_once(kernel, z, need_grad, ImplOptions(sync_free=ctx.sync_free))
        grad, rows = output[4], output[5:]
        ctx.save_for_backward(*((grad,) if ctx.eager else (z, *rows)), safe, valid)

    def backward(ctx, g_loss, *unused):
        saved = ctx.saved_tensors
        safe, valid = saved[-2:]
        with torch.no_grad():  # also under create_graph=True: the analytic gradient has no graph of its own
            if ctx.eager:  # out of place: where nothing else reads it, Inductor reuses the buffer
                g = g_loss.to(saved[0].dtype)
                grad = saved[0] * (g.unsqueeze(1) if ctx.reduction == "none" else g)
            else:
                z, rows = saved[0], saved[1:7]
                scale = upstream_rows(g_loss, z.shape[0]) * grad_scale(_targets(safe, valid), ctx.reduction)
                grad = backward_op(z, safe, valid, *rows, scale, *ctx.spec_values, ctx.sync_free, ctx.chunk_rows)
        return (once_differentiable(grad, kernel.name, None),) + (None,) * (2 + N_SPEC + 5)

    forward_op.register_autograd(backward, setup_context=setup_context)


# -- the chunked implementation ----------------------------------------------------------
_FORWARD_OUTPUTS = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


@torch.library.custom_op(f"{NAMESPACE}::chunked_forward", mutates_args=())
def chunked_forward(z: Tensor, safe: Tensor, valid: Tensor, label_smoothing: float, log_end: float, bonus: str,
                    bonus_weight: float, bonus_gamma: Optional[float], bonus_start: float,
                    bonus_smoothing: Optional[float], reduction: str, want_stats: bool, need_grad: bool,
                    sync_free: bool, chunk_rows: Optional[int]) -> _FORWARD_OUTPUTS:
    return forward_body(ChunkedKernel, z, safe, valid,
                        (label_smoothing, log_end, bonus, bonus_weight, bonus_gamma, bonus_start, bonus_smoothing),
                        reduction, want_stats, need_grad, sync_free, chunk_rows)


@chunked_forward.register_fake
def _(z, safe, valid, label_smoothing, log_end, bonus, bonus_weight, bonus_gamma, bonus_start, bonus_smoothing,
      reduction, want_stats, need_grad, sync_free, chunk_rows):
    return forward_fake(ChunkedKernel, z, reduction, want_stats, need_grad, sync_free)


@torch.library.custom_op(f"{NAMESPACE}::chunked_backward", mutates_args=())
def chunked_backward(z: Tensor, safe: Tensor, valid: Tensor, row_max: Tensor, inv_sum: Tensor, coef: Tensor,
                     grad_target: Tensor, grad_argmax: Tensor, argmax_col: Tensor, row_scale: Tensor,
                     label_smoothing: float, log_end: float, bonus: str, bonus_weight: float,
                     bonus_gamma: Optional[float], bonus_start: float, bonus_smoothing: Optional[float],
                     sync_free: bool, chunk_rows: Optional[int]) -> Tensor:
    return backward_body(ChunkedKernel, z, safe, valid, (row_max, inv_sum, coef, grad_target, grad_argmax, argmax_col),
                         row_scale, (label_smoothing, log_end, bonus, bonus_weight, bonus_gamma, bonus_start,
                                     bonus_smoothing), sync_free, chunk_rows)


@chunked_backward.register_fake
def _(z, *args):
    return torch.empty_like(z)


register_loss_autograd(chunked_forward, chunked_backward, ChunkedKernel)


# -- the loss in a graph -----------------------------------------------------------------
def forward_op(name: str):
    """The forward operator of implementation ``name``."""
    if name == "chunked":
        return chunked_forward
    if name == "triton":
        from .triton_el import triton_forward  # registered where Triton can run

        return triton_forward
    raise ValueError(name)


def graph_forward(name, logits, target, spec: BonusSpec, ignore_index: int, reduction: str, want_stats: bool,
                  options: ImplOptions):
    """The loss through the operators (what runs inside a compiled graph)."""
    from .reference import reference_forward

    V = logits.size(-1)
    t = target.reshape(-1)
    options = options.for_tensor(logits)
    safe, valid = targets_op(t, V, ignore_index, bool(options.sync_free))
    if name == "reference":  # plain tensor operations: the graph holds them
        return reference_forward(logits, torch.where(valid, safe, ignore_index).view(target.shape), spec,
                                 ignore_index, reduction, want_stats)
    z = logits.reshape(-1, V).contiguous()
    need_grad = torch.is_grad_enabled() and logits.requires_grad
    out = forward_op(name)(z, safe, valid, *spec_args(spec), reduction, want_stats, need_grad,
                           bool(options.sync_free), options.chunk_rows)
    return shaped_result(out[0], out[1], out[2], out[3], target, reduction, want_stats)
