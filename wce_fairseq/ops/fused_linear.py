"""Output projection and encouraging loss fused, chunk by chunk over tokens.

``logits = h @ W^T (+ b)`` is formed for one chunk of rows at a time, the loss
and its gradient w.r.t. that chunk of logits are computed (by the chunked or
the Triton kernel, writing the gradient over the chunk), and the gradient is
pushed through the projection at once:

    ∂L/∂h_c = G_c W,    ∂L/∂W += G_c^T h_c,    ∂L/∂b += Σ_rows G_c

so the N×V logits never exist: peak loss memory is one chunk of logits (one
buffer, reused by every chunk) plus the gradients of h, W (and b), whatever N
is. Only ``reduction`` "sum" or "mean" (a per-token upstream gradient would
have to reach inside the chunks).
"""
from __future__ import annotations

from typing import Optional

import torch

from .bonus import BonusSpec
from .common import LOW_PRECISION, Diagnostics, ELResult, add_diagnostics, grad_scale, prepare_targets, reduce_tokens
from .compat import autocast_dtype, compiler_disable
from .dispatch import kernel, resolve_impl
from .function import ImplOptions
from .targets import check_target_range

# Rows per chunk: 2^22 logits, and at least 256 rows. Each chunk reads the
# whole weight twice and the weight's gradient once (V x D each): at LLM
# vocabularies and fewer rows those reads, not the matmuls, set the time
# (docs/performance.md, "The fused projection").
FUSED_CHUNK_ELEMENTS = 1 << 22
FUSED_MIN_ROWS = 256


def _logits_dtype(h, weight):
    """The dtype the logits' matmul runs in, before the loss takes them in
    fp32: the autocast dtype under autocast (as ``nn.Linear`` would), fp16/bf16
    for such inputs on a GPU (tensor cores, fp32 accumulation); else None:
    fp32."""
    autocast = autocast_dtype(h.device.type)
    if autocast is not None:
        return autocast
    if h.is_cuda and h.dtype in LOW_PRECISION and weight.dtype == h.dtype:
        return h.dtype
    return None


class FusedLinearEncouragingLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, target, spec, ignore_index, reduction, want_stats, chunk_rows, impl, sync_free):
        N, D = h.shape
        V = weight.shape[0]
        targets = prepare_targets(target, V, ignore_index)
        scale = grad_scale(targets, reduction)
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        need = need_h or need_w or need_b
        f32 = torch.float32
        wf = weight.to(f32)
        grad_h = torch.zeros(N, D, dtype=f32, device=h.device) if need_h else None
        grad_w = torch.zeros(V, D, dtype=f32, device=h.device) if need_w else None
        grad_b = torch.zeros(V, dtype=f32, device=h.device) if (need_b and bias is not None) else None
        loss, nll, bon = (torch.zeros(N, dtype=f32, device=h.device) for _ in range(3))
        stats: Optional[Diagnostics] = None
        step = chunk_rows or max(FUSED_MIN_ROWS, FUSED_CHUNK_ELEMENTS // V)
        lowp = _logits_dtype(h, weight)
        w_lowp = weight.to(lowp) if lowp is not None else None
        loss_kernel = kernel(impl)
        # one chunk of logits, written over by each chunk's matmul and then by its
        # gradient: a single chunk-sized buffer is all the loop holds
        z_buf = torch.empty(min(step, N), V, dtype=f32, device=h.device)
        with torch.autocast(h.device.type, enabled=False):  # each matmul below in the dtype it names
            for c0 in range(0, N, step):
                c1 = min(c0 + step, N)
                hc = h[c0:c1].to(f32)
                z = z_buf[: c1 - c0]
                if lowp is not None:
                    z.copy_(h[c0:c1].to(lowp) @ w_lowp.t())
                else:
                    torch.mm(hc, wf.t(), out=z)
                if bias is not None:
                    z += bias.to(f32)
                out = loss_kernel.forward(z, targets.slice(c0, c1), spec, want_stats=want_stats,
                                          grad_scale=scale[c0:c1] if need else None, inplace=True, sync_free=sync_free)
                loss[c0:c1], nll[c0:c1], bon[c0:c1] = out.loss, out.nll, out.bonus
                if want_stats:
                    stats = add_diagnostics(stats, out.stats)
                g = out.grad
                if g is not None:  # this chunk's logits' gradient, through the projection, in fp32
                    if grad_h is not None:
                        torch.mm(g, wf, out=grad_h[c0:c1])
                    if grad_w is not None:
                        grad_w.addmm_(g.t(), hc)
                    if grad_b is not None:
                        grad_b += g.sum(0)
        ctx.grads = (grad_h, grad_w, grad_b)
        ctx.dtypes = (h.dtype, weight.dtype, bias.dtype if bias is not None else None)
        outs = [reduce_tokens(x, targets.n_valid, reduction) for x in (loss, nll, bon)]
        vec = stats.vector() if stats is not None else torch.zeros(0, dtype=torch.float64, device=h.device)
        ctx.mark_non_differentiable(outs[1], outs[2], vec)
        return outs[0], outs[1], outs[2], vec

    @staticmethod
    def backward(ctx, g_loss, *unused):
        # the upstream gradient folded into the parameter gradients in place
        # (no second copy of the weight's), without reading it back to the host
        grads = [None if gr is None else gr.mul_(g_loss.to(gr.dtype)).to(dt) for gr, dt in zip(ctx.grads, ctx.dtypes)]
        ctx.grads = None
        return grads[0], grads[1], grads[2], None, None, None, None, None, None, None, None


@compiler_disable  # a chunk loop: inside a compiled model it runs eagerly, between two graphs
def fused_linear_encouraging_loss(
    hidden, weight, bias, target, spec: BonusSpec, *, ignore_index=-100, reduction="sum", want_stats=False,
    chunk_rows=None, impl="auto", sync_free=None,
) -> ELResult:
    """``encouraging_loss(hidden @ weight.T + bias, target)`` without the logits.
    ``impl``: the per-chunk loss, "triton" (auto on CUDA) or "chunked"
    ("reference" is taken as "chunked": the fused path has no autograd form).
    ``sync_free``: the device code path (default: on for CUDA tensors)."""
    if reduction not in ("sum", "mean"):
        raise ValueError("the fused projection supports reduction 'sum' or 'mean'")
    impl = resolve_impl(impl, hidden.device)
    if impl == "reference":
        impl = "chunked"
    D = hidden.shape[-1]
    h = hidden.reshape(-1, D)
    t = target.reshape(-1)
    sync_free = ImplOptions(sync_free=sync_free).for_tensor(hidden).sync_free
    check_target_range(t, weight.shape[0], ignore_index, deferred=sync_free)
    loss, nll, bonus, vec = FusedLinearEncouragingLoss.apply(
        h, weight, bias, t, spec, ignore_index, reduction, want_stats, chunk_rows, impl, sync_free
    )
    return ELResult(loss, nll, bonus, Diagnostics(*vec.unbind()) if want_stats else None)
