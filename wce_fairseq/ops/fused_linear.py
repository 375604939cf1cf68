"""Output projection and encouraging loss fused, chunk by chunk over tokens.

``logits = h @ W^T (+ b)`` is formed for one chunk of rows at a time, the loss
and its gradient w.r.t. that chunk of logits are computed (by the chunked
path, writing the gradient over the chunk), and the gradient is pushed through
the projection at once:

    ∂L/∂h_c = G_c W,    ∂L/∂W += G_c^T h_c,    ∂L/∂b += Σ_rows G_c

so the N×V logits never exist: peak loss memory is one chunk of logits plus
the gradients of h, W (and b), whatever N is. Only ``reduction`` "sum" or
"mean" (a per-token upstream gradient would have to reach inside the chunks).
"""
from __future__ import annotations

import torch

from .bonus import BonusSpec
from .chunked import chunked_compute
from .common import LOW_PRECISION, ELResult, check_target_range, finish_forward

# rows of logits per chunk: large enough for an efficient matmul
FUSED_CHUNK_ELEMENTS = 1 << 22


class FusedLinearEncouragingLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, target, spec, ignore_index, reduction, want_stats, chunk_rows, impl):
        N, D = h.shape
        V = weight.shape[0]
        valid = target != ignore_index
        t = torch.where(valid, target, torch.zeros_like(target)).long()
        n_valid = valid.sum()
        scale = 1.0 / max(int(n_valid), 1) if reduction == "mean" else 1.0
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        need = need_h or need_w or need_b
        f32 = torch.float32
        wf = weight.to(f32)
        grad_h = torch.zeros(N, D, dtype=f32, device=h.device) if need_h else None
        grad_w = torch.zeros(V, D, dtype=f32, device=h.device) if need_w else None
        grad_b = torch.zeros(V, dtype=f32, device=h.device) if (need_b and bias is not None) else None
        loss, nll, bon = (torch.zeros(N, dtype=f32, device=h.device) for _ in range(3))
        stats = torch.zeros(5, dtype=torch.float64, device=h.device) if want_stats else None
        step = chunk_rows or max(1, FUSED_CHUNK_ELEMENTS // V)
        # fp16/bf16 on a GPU: the logits come from a matmul in the input dtype
        # (tensor cores, fp32 accumulation) and are handed to the loss in fp32.
        # Elsewhere (CPU) the chunk is multiplied in fp32.
        native = h.is_cuda and h.dtype in LOW_PRECISION and weight.dtype == h.dtype
        if impl == "triton":  # imported only where it can run
            from .triton_el import _launch as _triton_launch
            from .triton_el import _stats as _triton_stats
        for c0 in range(0, N, step):
            c1 = min(c0 + step, N)
            hc = h[c0:c1].to(f32)
            z = (h[c0:c1] @ weight.t()).to(f32) if native else hc @ wf.t()
            if bias is not None:
                z += bias.to(f32)
            if impl == "triton":  # the fused kernel, gradient written over the chunk
                lt, nt, bt, g, per_row = _triton_launch(z, target[c0:c1], spec, ignore_index, scale, need, True)
                st = _triton_stats(valid[c0:c1], per_row) if want_stats else None
            else:
                lt, nt, bt, g, st = chunked_compute(z, t[c0:c1], valid[c0:c1], spec, scale, need, want_stats,
                                                    inplace=True)
            loss[c0:c1], nll[c0:c1], bon[c0:c1] = lt, nt, bt
            if want_stats:
                stats += st
            if g is not None:
                if grad_h is not None:
                    torch.mm(g, wf, out=grad_h[c0:c1])
                if grad_w is not None:
                    grad_w.addmm_(g.t(), hc)
                if grad_b is not None:
                    grad_b += g.sum(0)
        ctx.grads = (grad_h, grad_w, grad_b)
        ctx.dtypes = (h.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return finish_forward(ctx, (loss, nll, bon), stats, n_valid, reduction, h.device)

    @staticmethod
    def backward(ctx, g_loss, *unused):
        grads = []
        for gr, dt in zip(ctx.grads, ctx.dtypes):
            if gr is None:
                grads.append(None)
                continue
            if g_loss.numel() != 1 or float(g_loss) != 1.0:
                gr = gr * g_loss.to(gr.dtype)
            grads.append(gr.to(dt))
        ctx.grads = None
        return grads[0], grads[1], grads[2], None, None, None, None, None, None, None


def fused_linear_encouraging_loss(
    hidden, weight, bias, target, spec: BonusSpec, *, ignore_index=-100, reduction="sum", want_stats=False,
    chunk_rows=None, impl="auto",
) -> ELResult:
    """``encouraging_loss(hidden @ weight.T + bias, target)`` without the logits.
    ``impl``: the per-chunk loss, "triton" (auto on CUDA) or "chunked"
    ("reference" is taken as "chunked": the fused path has no autograd form)."""
    from ..functional import resolve_impl

    if reduction not in ("sum", "mean"):
        raise ValueError("the fused projection supports reduction 'sum' or 'mean'")
    impl = resolve_impl(impl, hidden.device)
    D = hidden.shape[-1]
    h = hidden.reshape(-1, D)
    t = target.reshape(-1)
    check_target_range(t, weight.shape[0], ignore_index)
    loss, nll, bonus, stats = FusedLinearEncouragingLoss.apply(
        h, weight, bias, t, spec, ignore_index, reduction, want_stats, chunk_rows, impl
    )
    return ELResult(loss, nll, bonus, stats if want_stats else None)
