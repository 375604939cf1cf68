"""``impl="triton"``: two kernels, one program per token row.

* :func:`el_forward_kernel` reads the row once for the online max and
  normaliser (and the sums that make 1 − p exact for the target and the
  row's argmax), and — with bonus smoothing λ > 0 — once more for Σ B(p) and
  S = Σ q'D(p). It writes the per-token loss parts, the diagnostics and the
  row state (``common.RowState``: six numbers per row).
* :func:`el_backward_kernel` reads the row once more and writes its gradient,
  with the upstream gradient folded in, in fp32, before the one cast.

Forward + backward: three passes over the logits with λ = 0, four with λ > 0,
for every dtype; no other N×V buffer (the gradient goes to its own buffer or
over the logits). The launch configuration comes from ``triton_config``.

Imported only where Triton can run (CUDA, or ``TRITON_INTERPRET=1`` on the CPU,
which is how the tests run it); ``tests/ops/test_triton_compile.py`` compiles both
kernels for real GPUs offline.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .bonus import BonusSpec
from .common import KernelForward, RowState, Targets, diagnostics, weights
from .compat import HAS_LOSS_OPERATORS
from .triton_config import AUTOTUNE_CANDIDATES, COMPILE_OPTIONS, autotune_enabled, launch_config

# BONUS constexpr: the shape of B, or none where the bonus is inactive
BONUS_CODES = {"log": 0, "log_clamped": 1, "power": 2, "cos": 3, "none": 4}


def bonus_code(spec: BonusSpec) -> int:
    if not spec.active:
        return BONUS_CODES["none"]
    if spec.bonus == "log" and spec.log_end >= 1.0:
        return BONUS_CODES["log_clamped"]
    return BONUS_CODES[spec.bonus]


@triton.jit
def _log1p(x):
    # log(1 + x) accurate for small x (Goldberg's trick)
    u = 1.0 + x
    return tl.where(u == 1.0, x, tl.log(u) * x / tl.where(u == 1.0, 1.0, u - 1.0))


@triton.jit
def _sin_cos_half_pi(p):
    """sin and cos of x = πp/2 for p in [0, 1] (x in [0, π/2]): Taylor series
    to x^13 and x^14, whose truncation (< 1e-9) is below fp32 rounding. Plain
    multiply-adds: no libdevice range reduction, few registers."""
    x = 1.5707963267948966 * p
    x2 = x * x
    s = 1.0 / 6227020800
    s = -1.0 / 39916800 + x2 * s
    s = 1.0 / 362880 + x2 * s
    s = -1.0 / 5040 + x2 * s
    s = 1.0 / 120 + x2 * s
    s = -1.0 / 6 + x2 * s
    s = x * (1.0 + x2 * s)
    c = -1.0 / 87178291200
    c = 1.0 / 479001600 + x2 * c
    c = -1.0 / 3628800 + x2 * c
    c = 1.0 / 40320 + x2 * c
    c = -1.0 / 720 + x2 * c
    c = 1.0 / 24 + x2 * c
    c = -0.5 + x2 * c
    c = 1.0 + x2 * c
    return s, c


@triton.jit
def _bonus_curve(p, omp, le, gamma, start, b_start, BONUS: tl.constexpr):
    """(B_s(p), p·B_s'(p)); ``omp`` = 1 − p computed by the caller; the start
    shift (s = ``start``, B(s) = ``b_start``) is a no-op at s = 0."""
    if BONUS == 0:
        # conservative log: log(1 − min(p, LE)) − relu(p − LE)/(1 − LE); p·B' = −p/(1 − min(p, LE))
        pc = tl.minimum(p, le)
        b = tl.log(1.0 - pc) - tl.maximum(p - le, 0.0) / (1.0 - le)
        d = -p / (1.0 - pc)
    elif BONUS == 1:
        # log(max(1 − p, 1e-5)) (bonus.LOG_CLAMP); derivative 0 inside the clamp
        om = tl.maximum(omp, 1e-5)
        b = tl.log(om)
        d = tl.where(omp > 1e-5, -p / om, 0.0)
    elif BONUS == 2:
        # −p^γ, p·B' = −γ p^γ (0 at p = 0 for any γ > 0)
        pg = tl.where(p > 0.0, tl.exp(gamma * tl.log(tl.maximum(p, 1e-38))), 0.0)
        b = -pg
        d = -gamma * pg
    else:
        # cos(πp) − 1 = −2 sin²(πp/2) (no cancellation at small p); −πp·sin(πp) = −2πp·sin(πp/2)·cos(πp/2)
        s, c = _sin_cos_half_pi(p)
        b = -2.0 * s * s
        d = -6.283185307179586 * p * s * c
    keep = p >= start
    return tl.where(keep, b - b_start, 0.0), tl.where(keep, d, 0.0)


@triton.jit
def el_forward_kernel(
    z_ptr, z_stride, t_ptr, valid_ptr, V,
    eps, eps_i, lam, lam_i, rho, le, gamma, start, b_start,
    loss_ptr, nll_ptr, bonus_ptr, p_target_ptr, margin_ptr, correct_ptr,
    row_max_ptr, inv_sum_ptr, coef_ptr, grad_target_ptr, grad_argmax_ptr, argmax_col_ptr,
    BONUS: tl.constexpr, LAM_POS: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    z_row = z_ptr + row * z_stride
    y = tl.load(t_ptr + row).to(tl.int64)  # a safe id: ignored and out-of-range targets are 0
    vf = tl.load(valid_ptr + row).to(tl.float32)
    cols = tl.arange(0, BLOCK)
    z_t = tl.load(z_row + y).to(tl.float32)

    # Step 1. One pass: the online max m and d = Σ exp(z − m); the same sum
    # without the target (d_t: 1 − p_t = d_t/d exactly) and without the row's
    # first argmax a (d_a: 1 − p_a = d_a/d); Σ (z − z_t) for the smoothing
    # term; the best logit other than y. Everything after works from z − m,
    # exact near the max, never from z − lse (whose ulp would blur every p).
    m = -float("inf")
    d = 0.0
    d_t = 0.0
    d_a = 0.0
    a = 0
    sum_z = 0.0
    best_other = -float("inf")
    for c0 in range(0, V, BLOCK):
        c = c0 + cols
        x = tl.load(z_row + c, mask=c < V, other=-float("inf")).to(tl.float32)
        b_max = tl.max(x, 0)
        b_pos = c0 + tl.argmax(x, 0)  # first maximum of the block
        m_new = tl.maximum(m, b_max)
        e = tl.exp(x - m_new)
        rescale = tl.exp(m - m_new)
        b_sum = tl.sum(e, 0)
        d = d * rescale + b_sum
        d_t = d_t * rescale + tl.sum(tl.where(c == y, 0.0, e), 0)
        # a new maximum: the old one (weight 1 before rescaling) joins d_a; a tie keeps the earlier index
        new_max = b_max > m
        d_a = tl.where(new_max, (d_a + 1.0) * rescale + tl.sum(tl.where(c == b_pos, 0.0, e), 0), d_a + b_sum)
        a = tl.where(new_max, b_pos, a)
        m = m_new
        sum_z += tl.sum(tl.where(c < V, x - z_t, 0.0), 0)
        best_other = tl.maximum(best_other, tl.max(tl.where(c == y, -float("inf"), x), 0))

    # Step 2. The CE terms. log p_t = −log1p(d_t/e_t): exact as p_t → 1.
    log_d = tl.log(d)
    inv_d = 1.0 / d
    e_t = tl.exp(z_t - m)
    lp_t = tl.where(e_t > 1e-30, -_log1p(d_t / tl.maximum(e_t, 1e-30)), (z_t - m) - log_d)
    nll = -lp_t
    # Σ_v log p_v = Σ (z_v − z_t) − V (lse − z_t), both small near the target;
    # (1 − ε − ε_i)·nll + ε_i·(−Σ log p), fairseq's form of the smoothed CE
    # (without smoothing the second term is 0, also where a −inf logit makes its sum −inf)
    ce = (1.0 - eps - eps_i) * nll - tl.where(eps_i != 0.0, eps_i * (sum_z - V * ((m - z_t) + log_d)), 0.0)
    p_t = tl.exp(lp_t)
    omp_t = d_t * inv_d
    # A wrong argmax is the one non-target entry that can have p > ½, where
    # 1 − p by subtraction loses digits: p_a = 1/d, 1 − p_a = d_a/d.
    if LAM_POS:
        wrong = a != y
    else:
        wrong = a < 0  # never: no entry besides the target needs exact work
    col = tl.where(wrong, a, y)
    p_a = inv_d
    omp_a = d_a * inv_d

    # Step 3 (bonus on). B and D = p·B' at the target and a wrong argmax from
    # their exact 1 − p; with λ > 0 a second pass for the other entries.
    bonus = 0.0
    s_total = 0.0
    s_rest = 0.0
    d_y = 0.0
    d_w = 0.0
    if BONUS != 4:
        b_y, d_y = _bonus_curve(p_t, omp_t, le, gamma, start, b_start, BONUS)
        b_rest = 0.0
        if LAM_POS:
            b_w, d_w = _bonus_curve(p_a, omp_a, le, gamma, start, b_start, BONUS)
            b_w = tl.where(wrong, b_w, 0.0)
            d_w = tl.where(wrong, d_w, 0.0)
            acc_b = tl.zeros([BLOCK], dtype=tl.float32)
            acc_d = tl.zeros([BLOCK], dtype=tl.float32)
            for c0 in range(0, V, BLOCK):
                c = c0 + cols
                msk = (c < V) & (c != y) & (c != col)
                x = tl.load(z_row + c, mask=msk, other=-float("inf")).to(tl.float32)
                p = tl.exp(x - m) * inv_d
                b, dd = _bonus_curve(p, 1.0 - p, le, gamma, start, b_start, BONUS)
                acc_b += tl.where(msk, b, 0.0)
                acc_d += tl.where(msk, dd, 0.0)
            b_rest = tl.sum(acc_b, 0) + b_w
            s_rest = lam_i * (tl.sum(acc_d, 0) + d_w)
        bonus = rho * ((1.0 - lam) * b_y + lam_i * b_rest)
        s_total = (1.0 - lam) * d_y + s_rest

    # Step 4. Per-token outputs and diagnostics.
    # an ignored row adds exactly nothing, whatever its logits hold (NaN, inf)
    keep = vf != 0.0
    tl.store(loss_ptr + row, tl.where(keep, ce + bonus, 0.0))
    tl.store(nll_ptr + row, tl.where(keep, nll, 0.0))
    tl.store(bonus_ptr + row, tl.where(keep, bonus, 0.0))
    tl.store(p_target_ptr + row, p_t)
    tl.store(margin_ptr + row, z_t - best_other)
    tl.store(correct_ptr + row, (z_t > best_other).to(tl.int8))

    # Step 5. The row state of the gradient (docs/design.md, "The gradient"):
    # off the target and a wrong argmax  p_j (1 − ρS) + ρ λ_i D(p_j) − ε_i;
    # the target  −(1 − p_t) + ε + ρ((1 − λ) D(p_t)(1 − p_t) − p_t S_rest);
    # a wrong argmax  p_a − ε_i + ρ(λ_i D(p_a)(1 − p_a) − p_a (S − λ_i D(p_a))).
    g_t = -omp_t + eps + rho * ((1.0 - lam) * d_y * omp_t - p_t * s_rest)
    g_a = p_a - eps_i + rho * (lam_i * d_w * omp_a - p_a * (s_total - lam_i * d_w))
    tl.store(row_max_ptr + row, m)
    tl.store(inv_sum_ptr + row, inv_d)
    tl.store(coef_ptr + row, 1.0 - rho * s_total)
    tl.store(grad_target_ptr + row, g_t)
    tl.store(grad_argmax_ptr + row, tl.where(wrong, g_a, g_t))
    tl.store(argmax_col_ptr + row, col)


@triton.jit
def el_backward_kernel(
    z_ptr, z_stride, g_ptr, g_stride, t_ptr, V, scale_ptr,
    row_max_ptr, inv_sum_ptr, coef_ptr, grad_target_ptr, grad_argmax_ptr, argmax_col_ptr,
    eps_i, rho_lam_i, le, gamma, start, b_start,
    BONUS: tl.constexpr, LAM_POS: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    z_row = z_ptr + row * z_stride
    g_row = g_ptr + row * g_stride
    y = tl.load(t_ptr + row).to(tl.int64)
    col = tl.load(argmax_col_ptr + row)
    # Step 1. The row's factors, times its scale (the mean's 1/n, the upstream
    # gradient, 0 on ignored rows), in fp32.
    sc = tl.load(scale_ptr + row)
    m = tl.load(row_max_ptr + row)
    inv_d = tl.load(inv_sum_ptr + row)
    coef = tl.load(coef_ptr + row) * sc
    g_t = tl.load(grad_target_ptr + row) * sc
    g_a = tl.load(grad_argmax_ptr + row) * sc
    off = eps_i * sc
    w_d = rho_lam_i * sc
    cols = tl.arange(0, BLOCK)
    # Step 2. One pass: p from the saved max and normaliser, the gradient
    # written once in the logits' dtype.
    for c0 in range(0, V, BLOCK):
        c = c0 + cols
        msk = c < V
        x = tl.load(z_row + c, mask=msk, other=-float("inf")).to(tl.float32)
        p = tl.exp(x - m) * inv_d
        g = p * coef - off
        if BONUS != 4:
            if LAM_POS:
                b, dd = _bonus_curve(p, 1.0 - p, le, gamma, start, b_start, BONUS)
                g += w_d * dd
        g = tl.where(c == col, g_a, g)
        g = tl.where(c == y, g_t, g)
        g = tl.where(sc != 0.0, g, 0.0)  # ignored rows: exactly 0, whatever their logits hold
        tl.store(g_row + c, g.to(g_ptr.dtype.element_ty), mask=msk)


def _curve_args(spec: BonusSpec) -> dict:
    return dict(le=float(spec.log_end), gamma=float(spec.bonus_gamma or 1.0), start=float(spec.bonus_start),
                b_start=float(spec.raw_at(spec.bonus_start)) if spec.bonus_start > 0 else 0.0)


def forward_args(z, targets: Targets, spec: BonusSpec, outputs, rows: RowState) -> dict:
    """Every argument of :func:`el_forward_kernel` by name (also what the
    offline compile check binds)."""
    w = weights(spec, z.shape[1])
    loss, nll, bonus, p_t, margin, correct = outputs
    return dict(
        z_ptr=z, z_stride=z.stride(0), t_ptr=targets.safe, valid_ptr=targets.valid.view(torch.int8), V=z.shape[1],
        eps=w.eps, eps_i=w.eps_i, lam=w.lam, lam_i=w.lam_i, rho=w.rho, **_curve_args(spec),
        loss_ptr=loss, nll_ptr=nll, bonus_ptr=bonus, p_target_ptr=p_t, margin_ptr=margin, correct_ptr=correct,
        row_max_ptr=rows.row_max, inv_sum_ptr=rows.inv_sum, coef_ptr=rows.coef, grad_target_ptr=rows.grad_target,
        grad_argmax_ptr=rows.grad_argmax, argmax_col_ptr=rows.argmax_col,
        BONUS=bonus_code(spec), LAM_POS=bool(w.lam > 0),
    )


def backward_args(z, grad, targets: Targets, spec: BonusSpec, rows: RowState, scale) -> dict:
    """Every argument of :func:`el_backward_kernel` by name."""
    w = weights(spec, z.shape[1])
    return dict(
        z_ptr=z, z_stride=z.stride(0), g_ptr=grad, g_stride=grad.stride(0), t_ptr=targets.safe, V=z.shape[1],
        scale_ptr=scale, row_max_ptr=rows.row_max, inv_sum_ptr=rows.inv_sum, coef_ptr=rows.coef,
        grad_target_ptr=rows.grad_target, grad_argmax_ptr=rows.grad_argmax, argmax_col_ptr=rows.argmax_col,
        eps_i=w.eps_i, rho_lam_i=w.rho * w.lam_i, **_curve_args(spec),
        BONUS=bonus_code(spec), LAM_POS=bool(w.lam > 0),
    )


def launch_forward(*, z, targets: Targets, spec: BonusSpec, outputs, rows: RowState) -> None:
    if z.shape[0]:
        _launch("forward", z, forward_args(z, targets, spec, outputs, rows))


def launch_backward(*, z, grad, targets: Targets, spec: BonusSpec, rows: RowState, scale) -> None:
    if z.shape[0]:
        _launch("backward", z, backward_args(z, grad, targets, spec, rows, scale))


KERNELS = {"forward": el_forward_kernel, "backward": el_backward_kernel}
_AUTOTUNED: dict = {}

if HAS_LOSS_OPERATORS:
    from torch.library import triton_op, wrap_triton

    from . import library
else:  # a torch without the loss's operators launches kernels directly
    def wrap_triton(kernel):
        return kernel


def _launch(kind: str, z, args: dict) -> None:
    """One launch, through ``wrap_triton``: inside ``triton_forward`` and
    ``triton_backward`` traced for a graph it records the kernel there, else
    it launches it."""
    grid = (z.shape[0],)
    if z.is_cuda and autotune_enabled():
        wrap_triton(_autotuned(kind))[grid](**args, **COMPILE_OPTIONS)
        return
    cfg = launch_config(kind, z.shape[1], z.dtype, z.device)
    wrap_triton(KERNELS[kind])[grid](**args, BLOCK=cfg.block, num_warps=cfg.num_warps, **COMPILE_OPTIONS)


def _autotuned(kind: str):
    """The kernel timed over ``AUTOTUNE_CANDIDATES`` at its first call per V
    (the gradient buffer, which may be the logits, is restored between trials)."""
    if kind not in _AUTOTUNED:
        configs = [triton.Config({"BLOCK": c.block}, num_warps=c.num_warps) for c in AUTOTUNE_CANDIDATES[kind]]
        restore = ["g_ptr"] if kind == "backward" else []
        _AUTOTUNED[kind] = triton.autotune(configs=configs, key=["V"], restore_value=restore)(KERNELS[kind])
    return _AUTOTUNED[kind]


class TritonKernel:
    """The Triton implementation behind the shared autograd function (ops/function.py)."""

    name = "triton"

    @staticmethod
    def eager_gradient(z, sync_free: bool) -> bool:
        return False  # the gradient is always written in backward: nothing to scale afterwards

    @staticmethod
    def forward(z, targets: Targets, spec: BonusSpec, *, want_stats: bool, grad_scale=None, save_rows=False,
                inplace=False, sync_free=False, chunk_rows=None) -> KernelForward:
        N, dev = z.shape[0], z.device
        f32 = dict(dtype=torch.float32, device=dev)
        outputs = [torch.empty(N, **f32) for _ in range(5)] + [torch.empty(N, dtype=torch.int8, device=dev)]
        rows = RowState.empty(N, dev)
        launch_forward(z=z, targets=targets, spec=spec, outputs=outputs, rows=rows)
        loss, nll, bonus, p_t, margin, correct = outputs
        stats = diagnostics(targets.valid, p_t, margin, correct) if want_stats else None
        grad = None
        if grad_scale is not None:  # the fused projection: this chunk's gradient now
            grad = z if inplace else torch.empty_like(z)
            launch_backward(z=z, grad=grad, targets=targets, spec=spec, rows=rows, scale=grad_scale.contiguous())
        return KernelForward(loss, nll, bonus, stats, rows if save_rows else None, grad)

    @staticmethod
    def backward(z, targets: Targets, spec: BonusSpec, rows: RowState, grad_scale, *, inplace=False,
                 sync_free=False, chunk_rows=None):
        grad = z if inplace else torch.empty_like(z)
        launch_backward(z=z, grad=grad, targets=targets, spec=spec, rows=rows, scale=grad_scale.contiguous())
        return grad


# -- the operators (ops/library.py) ----------------------------------------------------------
if HAS_LOSS_OPERATORS:
    _FORWARD_OUTPUTS = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                             torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

    @triton_op(f"{library.NAMESPACE}::triton_forward", mutates_args=())
    def triton_forward(z: torch.Tensor, safe: torch.Tensor, valid: torch.Tensor, label_smoothing: float,
                       log_end: float, bonus: str, bonus_weight: float, bonus_gamma: Optional[float],
                       bonus_start: float, bonus_smoothing: Optional[float], reduction: str, want_stats: bool,
                       need_grad: bool, sync_free: bool, chunk_rows: Optional[int]) -> _FORWARD_OUTPUTS:
        return library.forward_body(TritonKernel, z, safe, valid, (label_smoothing, log_end, bonus, bonus_weight,
                                                                    bonus_gamma, bonus_start, bonus_smoothing),
                                    reduction, want_stats, need_grad, sync_free, chunk_rows)

    @triton_op(f"{library.NAMESPACE}::triton_backward", mutates_args=())
    def triton_backward(z: torch.Tensor, safe: torch.Tensor, valid: torch.Tensor, row_max: torch.Tensor,
                        inv_sum: torch.Tensor, coef: torch.Tensor, grad_target: torch.Tensor,
                        grad_argmax: torch.Tensor, argmax_col: torch.Tensor, row_scale: torch.Tensor,
                        label_smoothing: float, log_end: float, bonus: str, bonus_weight: float,
                        bonus_gamma: Optional[float], bonus_start: float, bonus_smoothing: Optional[float],
                        sync_free: bool, chunk_rows: Optional[int]) -> torch.Tensor:
        return library.backward_body(TritonKernel, z, safe, valid,
                                     (row_max, inv_sum, coef, grad_target, grad_argmax, argmax_col), row_scale,
                                     (label_smoothing, log_end, bonus, bonus_weight, bonus_gamma, bonus_start,
                                      bonus_smoothing), sync_free, chunk_rows)

    library.register_loss_autograd(triton_forward, triton_backward, TritonKernel)

    def _keep_opaque_where_interpreted() -> None:
        """Triton's CPU interpreter (the tests on a machine without a GPU) runs a
        kernel on real data only: traced for a graph, the two operators stay whole
        there (a fake implementation gives their shapes, and AOTAutograd keeps
        them undecomposed), as the chunked ones do. On a GPU, Inductor decomposes
        them into their kernels."""
        from torch._subclasses.functional_tensor import FunctionalTensorMode

        def whole(mode, op, types, args, kwargs):
            return mode.__torch_dispatch__(op, types, args, kwargs)

        @triton_forward.register_fake
        def _(z, safe, valid, label_smoothing, log_end, bonus, bonus_weight, bonus_gamma, bonus_start,
              bonus_smoothing, reduction, want_stats, need_grad, sync_free, chunk_rows):
            return library.forward_fake(TritonKernel, z, reduction, want_stats, need_grad, sync_free)

        @triton_backward.register_fake
        def _(z, *args):
            return torch.empty_like(z)

        for op in (triton_forward, triton_backward):
            op.register_torch_dispatch(FunctionalTensorMode, whole)


if HAS_LOSS_OPERATORS and os.environ.get("TRITON_INTERPRET") == "1":
    _keep_opaque_where_interpreted()
