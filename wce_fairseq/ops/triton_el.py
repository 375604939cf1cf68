"""``impl="triton"``: one fused kernel per token row.

Pass 1 reads the row once for the online max / sum-exp, Σ z (for the smoothing
term) and the best non-target logit (for the margin); pass 2 (only with bonus
smoothing λ > 0) reads it again for Σ B(p) and S = Σ q' D(p); pass 3 reads it a
third time and writes the gradient. No other buffer of size N×V exists: the
gradient goes to its own buffer, or over the logits with
``inplace_backward=True``. All math is fp32; the target-class gradient is formed
from ``lp_t`` so it does not cancel as p → 1.

Imported only where Triton can run (CUDA, or ``TRITON_INTERPRET=1`` on the CPU,
which is how the tests exercise it).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .bonus import BonusSpec
from .common import LOW_PRECISION, ELResult, finish_forward, reduce_tokens, take_saved_grad, upstream_rows

_BONUS_CODE = {"log": 0, "power": 1, "cos": 2, "none": 3}


@triton.jit
def _log1p(x):
    # log(1 + x) accurate for small x (Goldberg's trick)
    u = 1.0 + x
    return tl.where(u == 1.0, x, tl.log(u) * x / tl.where(u == 1.0, 1.0, u - 1.0))


@triton.jit
def _bonus_curve(p, omp, le, gamma, start, b_start, BONUS: tl.constexpr, LOG_CLAMPED: tl.constexpr,
                 HAS_START: tl.constexpr):
    """(B_s(p), p·B_s'(p)); omp = 1 - p computed by the caller."""
    if BONUS == 0:
        if LOG_CLAMPED:
            # log(max(1-p, 1e-5)) (bonus.LOG_CLAMP); derivative 0 inside the clamp
            om = tl.maximum(omp, 1e-5)
            b = tl.log(om)
            d = tl.where(omp > 1e-5, -p / om, 0.0)
        else:
            # conservative log: log(1 - min(p, LE)) - relu(p - LE)/(1 - LE); p·B' = -p/(1 - min(p, LE))
            pc = tl.minimum(p, le)
            b = tl.log(1.0 - pc) - tl.maximum(p - le, 0.0) / (1.0 - le)
            d = -p / (1.0 - pc)
    elif BONUS == 1:
        # -p^γ, p·B' = -γ p^γ (0 at p = 0 for any γ > 0)
        pg = tl.where(p > 0.0, tl.exp(gamma * tl.log(tl.maximum(p, 1e-38))), 0.0)
        b = -pg
        d = -gamma * pg
    elif BONUS == 2:
        b = tl.cos(3.141592653589793 * p) - 1.0
        d = -3.141592653589793 * p * tl.sin(3.141592653589793 * p)
    else:
        b = p * 0.0
        d = p * 0.0
    if HAS_START:
        keep = p >= start
        b = tl.where(keep, b - b_start, 0.0)
        d = tl.where(keep, d, 0.0)
    return b, d


@triton.jit
def _el_fwd_kernel(
    z_ptr, z_stride, t_ptr, g_ptr, g_stride,
    loss_ptr, nll_ptr, bonus_ptr, pt_ptr, margin_ptr, correct_ptr,
    V, ignore_index, eps, eps_i, lam, lam_i, rho, le, gamma, start, b_start, scale, rs_ptr,
    BONUS: tl.constexpr, LOG_CLAMPED: tl.constexpr, HAS_START: tl.constexpr, ACTIVE: tl.constexpr,
    LAM_POS: tl.constexpr, NEED_GRAD: tl.constexpr, ROW_SCALE: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    z_row = z_ptr + row * z_stride
    y = tl.load(t_ptr + row).to(tl.int64)
    valid = y != ignore_index
    y = tl.where(valid, y, 0)
    vf = valid.to(tl.float32)
    cols = tl.arange(0, BLOCK)

    # Pass 1: online max m and d = Σ exp(z - m), also without the target (d_o)
    # and without the row's argmax a (d_a); Σ (z - z_t); the best logit other
    # than y. Everything after works from z - m, exact near the max, never from
    # z - lse, whose rounding (ulp of lse) would blur every p when logits are
    # large.
    z_t = tl.load(z_row + y).to(tl.float32)
    m = -float("inf")
    d = 0.0
    d_o = 0.0  # Σ_{v≠y} exp(z_v - m): gives 1 - p_t = d_o / d with no cancellation
    d_a = 0.0  # Σ_{v≠a} exp(z_v - m): 1 - p_a = d_a / d for a wrong argmax a
    a = 0
    acc_z = tl.zeros([BLOCK], dtype=tl.float32)
    best_o = tl.full([BLOCK], -float("inf"), tl.float32)
    for start_col in range(0, V, BLOCK):
        c = start_col + cols
        msk = c < V
        x = tl.load(z_row + c, mask=msk, other=-float("inf")).to(tl.float32)
        b_max = tl.max(x, 0)
        b_pos = start_col + tl.argmax(x, 0)  # first maximum of the block
        m_new = tl.maximum(m, b_max)
        e = tl.exp(x - m_new)
        rescale = tl.exp(m - m_new)
        b_sum = tl.sum(e, 0)
        d = d * rescale + b_sum
        d_o = d_o * rescale + tl.sum(tl.where(c == y, 0.0, e), 0)
        # a new maximum: the old one (weight 1 before rescaling) joins d_a;
        # a tie keeps the earlier index as a
        new_max = b_max > m
        d_a = tl.where(new_max, (d_a + 1.0) * rescale + tl.sum(tl.where(c == b_pos, 0.0, e), 0), d_a + b_sum)
        a = tl.where(new_max, b_pos, a)
        m = m_new
        acc_z += tl.where(msk, x - z_t, 0.0)
        best_o = tl.maximum(best_o, tl.where(c == y, -float("inf"), x))
    log_d = tl.log(d)
    inv_d = 1.0 / d
    e_t = tl.exp(z_t - m)
    # lp_t = -log1p(d_o / e_t): exact as p_t → 1, where z_t - lse would cancel
    lp_t = tl.where(e_t > 1e-30, -_log1p(d_o / tl.maximum(e_t, 1e-30)), (z_t - m) - log_d)
    nll = -lp_t
    # Σ_v lp_v = Σ (z_v - z_t) - V (lse - z_t), both small near the target
    sum_lp = tl.sum(acc_z, 0) - V * ((m - z_t) + log_d)
    # (1-ε-ε_i)·nll + ε_i·(-Σ lp), fairseq's form of the smoothed CE
    ce = (1.0 - eps - eps_i) * nll - eps_i * sum_lp
    p_t = tl.exp(lp_t)
    omp_t = d_o * inv_d
    best_other = tl.max(best_o, 0)
    # A wrong argmax is the one non-target entry that can have p > 1/2, where
    # 1 - p by subtraction loses digits: take p_a = 1/d, 1 - p_a = d_a/d.
    # Every other non-target entry has p <= 1/2 and 1 - p is exact enough.
    wrong = a != y
    a_w = tl.where(wrong, a, -1)  # the wrong argmax's column, or none
    p_a = inv_d
    omp_a = d_a * inv_d

    # Pass 2 (λ > 0): Σ_v B(p_v), Σ_v D(p_v) for the non-target classes.
    bonus = 0.0
    s_tot = 0.0
    s_rest = 0.0
    d_t = 0.0
    d_wa = 0.0  # D(p_a) of a wrong argmax
    if ACTIVE:
        b_t, d_t = _bonus_curve(p_t, omp_t, le, gamma, start, b_start, BONUS, LOG_CLAMPED, HAS_START)
        b_rest = 0.0
        if LAM_POS:
            b_wa, d_wa = _bonus_curve(p_a, omp_a, le, gamma, start, b_start, BONUS, LOG_CLAMPED, HAS_START)
            b_wa = tl.where(wrong, b_wa, 0.0)
            d_wa = tl.where(wrong, d_wa, 0.0)
            acc_b = tl.zeros([BLOCK], dtype=tl.float32)
            acc_d = tl.zeros([BLOCK], dtype=tl.float32)
            for start_col in range(0, V, BLOCK):
                c = start_col + cols
                msk = (c < V) & (c != y) & (c != a_w)
                x = tl.load(z_row + c, mask=msk, other=-float("inf")).to(tl.float32)
                p = tl.exp(x - m) * inv_d
                b, dd = _bonus_curve(p, 1.0 - p, le, gamma, start, b_start, BONUS, LOG_CLAMPED, HAS_START)
                acc_b += tl.where(msk, b, 0.0)
                acc_d += tl.where(msk, dd, 0.0)
            b_rest = tl.sum(acc_b, 0) + b_wa
            s_rest = lam_i * (tl.sum(acc_d, 0) + d_wa)
        bonus = rho * ((1.0 - lam) * b_t + lam_i * b_rest)
        s_tot = (1.0 - lam) * d_t + s_rest

    tl.store(loss_ptr + row, (ce + bonus) * vf)
    tl.store(nll_ptr + row, nll * vf)
    tl.store(bonus_ptr + row, bonus * vf)
    tl.store(pt_ptr + row, p_t * vf)
    tl.store(margin_ptr + row, (z_t - best_other) * vf)
    tl.store(correct_ptr + row, tl.where(z_t > best_other, vf, 0.0))

    # Pass 3: ∂loss/∂z_j = p_j(1 - ρS) + ρ λ_i D(p_j) - ε_i off target;
    #         expm1(lp_t) + ε + ρ((1-λ) D(p_t)(1-p_t) - p_t S_rest) on target.
    # A wrong argmax a, in the same fp32-from-(1-p) form as the target, since
    # with an unbounded D its two terms cancel as p_a → 1:
    #         p_a - ε_i + ρ(λ_i D(p_a)(1-p_a) - p_a (S - λ_i D(p_a))).
    if NEED_GRAD:
        g_row = g_ptr + row * g_stride
        sc = scale * vf
        if ROW_SCALE:  # the upstream gradient, folded in before the one cast to the logits' dtype
            sc = sc * tl.load(rs_ptr + row).to(tl.float32)
        coef = (1.0 - rho * s_tot) * sc
        g_t = (-omp_t + eps + rho * ((1.0 - lam) * d_t * omp_t - p_t * s_rest)) * sc
        g_a = (p_a - eps_i + rho * (lam_i * d_wa * omp_a - p_a * (s_tot - lam_i * d_wa))) * sc
        for start_col in range(0, V, BLOCK):
            c = start_col + cols
            msk = c < V
            x = tl.load(z_row + c, mask=msk, other=-float("inf")).to(tl.float32)
            p = tl.exp(x - m) * inv_d
            g = p * coef - eps_i * sc
            if ACTIVE:
                if LAM_POS:
                    b, dd = _bonus_curve(p, 1.0 - p, le, gamma, start, b_start, BONUS, LOG_CLAMPED, HAS_START)
                    g += (rho * lam_i) * sc * dd
                    g = tl.where(c == a_w, g_a, g)
            g = tl.where(c == y, g_t, g)
            tl.store(g_row + c, g.to(g_ptr.dtype.element_ty), mask=msk)


def _launch(z, t, spec: BonusSpec, ignore_index: int, scale: float, need_grad: bool, inplace: bool,
            row_scale=None):
    """One launch over all rows. ``row_scale`` (fp32, one per row) multiplies
    the gradient before it is stored in the logits' dtype."""
    N, V = z.shape
    dev = z.device
    f32 = dict(dtype=torch.float32, device=dev)
    loss, nll, bonus, p_t, margin, correct = (torch.empty(N, **f32) for _ in range(6))
    grad = (z if inplace else torch.empty_like(z)) if need_grad else z
    V_ = int(V)
    active = spec.active
    lam = spec.smoothing_b if active else 0.0
    BLOCK = min(triton.next_power_of_2(V_), 4096 if z.is_cuda else 1024)
    b_start = spec.raw_at(spec.bonus_start) if spec.bonus_start > 0 else 0.0
    if N > 0:
        _el_fwd_kernel[(N,)](
            z, z.stride(0), t, grad, grad.stride(0),
            loss, nll, bonus, p_t, margin, correct,
            V_, int(ignore_index), float(spec.label_smoothing), float(spec.label_smoothing) / (V_ - 1),
            float(lam), float(lam) / (V_ - 1), float(spec.bonus_weight), float(spec.log_end),
            float(spec.bonus_gamma or 1.0), float(spec.bonus_start), float(b_start), float(scale),
            row_scale if row_scale is not None else loss,
            BONUS=_BONUS_CODE[spec.bonus], LOG_CLAMPED=bool(spec.log_end >= 1.0),
            HAS_START=bool(spec.bonus_start > 0), ACTIVE=bool(active), LAM_POS=bool(active and lam > 0),
            NEED_GRAD=bool(need_grad), ROW_SCALE=row_scale is not None, BLOCK=BLOCK,
            num_warps=8 if BLOCK >= 2048 else 4,
        )
    return loss, nll, bonus, (grad if need_grad else None), (p_t, margin, correct)


def _stats(valid, per_row):
    p_t, margin, correct = per_row
    v = valid.double()
    return torch.stack([v.sum(), p_t.double().sum(), ((p_t > 0.5).double() * v).sum(),
                        margin.double().sum(), correct.double().sum()])


class TritonEncouragingLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, t, spec, ignore_index, reduction, want_stats, inplace):
        valid = t != ignore_index
        n_valid = valid.sum()
        scale = 1.0 / max(int(n_valid), 1) if reduction == "mean" else 1.0
        # fp32 logits: the gradient is written during this pass (three reads,
        # one write). fp16/bf16: it is written in backward, where the upstream
        # gradient (a loss scale of up to 2^16) is known, so that it is
        # formed in fp32 and cast once (two more reads).
        deferred = ctx.needs_input_grad[0] and z.dtype in LOW_PRECISION
        loss, nll, bonus, grad, per_row = _launch(z, t, spec, ignore_index, scale,
                                                  ctx.needs_input_grad[0] and not deferred, inplace)
        ctx.grad = grad
        ctx.reduction = reduction
        ctx.deferred = (z, t, spec, ignore_index, scale, inplace) if deferred else None
        stats = _stats(valid, per_row) if want_stats else None
        return finish_forward(ctx, (loss, nll, bonus), stats, n_valid, reduction, z.device)

    @staticmethod
    def backward(ctx, g_loss, *unused):
        if ctx.deferred is not None:
            z, t, spec, ignore_index, scale, inplace = ctx.deferred
            ctx.deferred = None
            rows = upstream_rows(g_loss, z.shape[0])
            grad = _launch(z, t, spec, ignore_index, scale, True, inplace, row_scale=rows)[3]
            return grad, None, None, None, None, None, None
        return take_saved_grad(ctx, g_loss, "triton"), None, None, None, None, None, None


def triton_forward(logits, target, spec: BonusSpec, ignore_index: int, reduction: str, want_stats: bool,
                   inplace_backward: bool = False) -> ELResult:
    V = logits.size(-1)
    shape = target.shape
    z = logits.reshape(-1, V)
    if z.stride(-1) != 1:
        z = z.contiguous()
    t = target.reshape(-1).contiguous()
    if torch.is_grad_enabled() and logits.requires_grad:
        loss, nll, bonus, stats = TritonEncouragingLoss.apply(z, t, spec, ignore_index, reduction, want_stats,
                                                              inplace_backward)
    else:
        valid = t != ignore_index
        lt, nt, bt, _, per_row = _launch(z, t, spec, ignore_index, 1.0, False, False)
        n_valid = valid.sum()
        loss, nll, bonus = (reduce_tokens(x, n_valid, reduction) for x in (lt, nt, bt))
        stats = _stats(valid, per_row) if want_stats else None
    if reduction == "none":
        loss, nll, bonus = loss.view(shape), nll.view(shape), bonus.view(shape)
    return ELResult(loss, nll, bonus, stats if want_stats else None)


__all__ = ["triton_forward", "TritonEncouragingLoss"]
