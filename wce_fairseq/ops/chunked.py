"""``impl="chunked"``: the exact encouraging loss in pure PyTorch, with the
analytic gradient of docs/design.md ("The gradient").

Rows are processed in chunks small enough to stay in cache, in fp32 whatever
the input dtype. A chunk goes through these stages, each a function below:

1. :func:`normalise` — row max, Σ exp(z − max) and the same sum without the
   target (so 1 − p_target is exact as p → 1), the best non-target logit;
2. :func:`cross_entropy` — nll and fairseq's label-smoothed CE;
3. ``scan.wrong_argmax`` — rows whose argmax is not the target and has p > ½:
   that entry's exact 1 − p, from a sum that leaves it out;
4. :func:`bonus_sums` — ρ Σ q'B(p) and S = Σ q'D(p): the target and a wrong
   argmax from their exact 1 − p, every other entry (p ≤ ½) in one bulk pass;
5. :func:`row_state` — the few floats per row the gradient needs;
6. :func:`write_gradient` — the gradient rows, formed in fp32, stored once
   in the logits' dtype; rows of ignored tokens then set to exactly 0.

Forward runs 1–5, and 6 as well where the gradient is formed at once (fp32
logits on the CPU, while p is still in cache). Otherwise backward reruns only
6 from the saved row state: one read and one write of the logits.

Stage 1 and 3 are where a GPU would wait for the host (``nonzero`` to find
the rare rows that need a fix-up); ``scan`` makes that choice once per call:
:class:`IndexedScan` on the CPU, :class:`SyncFreeScan` (masked work on every
row, nothing read back) on CUDA tensors.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .bonus import BonusSpec
from .common import KernelForward, RowState, Targets, Weights, diagnostics, weights
from .threads import cpu_workers, run_chunks

_ONE = torch.tensor(1.0)
# Elements of one fp32 chunk (4 MiB): per chunk a worker thread runs a few
# dozen tensor operations, and larger chunks amortise their Python overhead;
# fastest of 2^18..2^21 on the benchmark machine (2 cores), fwd and fwd+bwd.
CHUNK_ELEMENTS = 1 << 20


class Normaliser(NamedTuple):
    row_max: torch.Tensor  # m
    sum_exp: torch.Tensor  # Σ_v exp(z_v − m)
    rest_of_target: torch.Tensor  # Σ_{v≠y} exp(z_v − m)
    e_target: torch.Tensor  # exp(z_y − m)
    z_target: torch.Tensor
    argmax: Optional[torch.Tensor]  # first maximum (SyncFreeScan only)
    best_other: Optional[torch.Tensor]  # best logit other than y (diagnostics only)


class WrongArgmax(NamedTuple):
    """Rows whose argmax is not the target and has p > ½ (``rows``, ``cols``),
    with that entry's p and exact 1 − p; with ``mask``, every row is listed
    and only the masked ones are real (the rest point at their target)."""

    rows: torch.Tensor
    cols: torch.Tensor
    p: torch.Tensor
    one_minus_p: torch.Tensor
    mask: Optional[torch.Tensor]


class BonusSums(NamedTuple):
    bonus: torch.Tensor  # ρ Σ_v q'_v B(p_v)
    s_total: torch.Tensor  # S = Σ_v q'_v D(p_v)
    s_rest: torch.Tensor  # λ_i Σ_{v≠y} D(p_v)
    d_target: torch.Tensor  # D(p_y)
    d_wrong: torch.Tensor  # D(p_a) of a wrong argmax, per listed row
    d_entries: Optional[torch.Tensor]  # D(p_v) entry by entry (0 at y and a), when the gradient is formed now


# -- stage 1 and 3: how rows are scanned -------------------------------------------
class IndexedScan:
    """The CPU: the rare rows that need exact work are found with ``nonzero``."""

    def row_max(self, z, want_argmax: bool, want_second: bool):
        return z.amax(dim=1), None, None

    def best_other(self, z, t, m, e_without_target, second):
        # the largest non-target exp(z - m); where it underflowed (the target
        # leads by more than ~87) the logits themselves
        e_bo = e_without_target.amax(1)
        best = m + e_bo.log()
        under = (e_bo == 0).nonzero().squeeze(1)
        if under.numel():
            zu = z.index_select(0, under).scatter_(1, t.index_select(0, under).unsqueeze(1), float("-inf"))
            best.index_copy_(0, under, zu.amax(1))
        return best

    def zero_ignored(self, g, valid):
        """Gradient rows of ignored tokens set to exactly 0 (their logits may be
        anything, NaN included): only those rows are written again."""
        ignored = (~valid).nonzero().squeeze(1)
        if ignored.numel():
            g.index_fill_(0, ignored, 0.0)

    def wrong_argmax(self, e, t, norm: Normaliser) -> WrongArgmax:
        wrong = ((norm.sum_exp < 2.0) & (norm.z_target < norm.row_max)).nonzero().squeeze(1)
        e_w = e.index_select(0, wrong)
        # in these rows the argmax is the one entry with e >= ½ Σe (e = 1): no tie
        a_w = e_w.argmax(1)
        e_w.scatter_(1, a_w.unsqueeze(1), 0.0)
        s_w = norm.sum_exp.index_select(0, wrong)
        return WrongArgmax(wrong, a_w, 1.0 / s_w, e_w.sum(1) / s_w, None)


class SyncFreeScan:
    """CUDA tensors: masked work on every row, nothing waits for the device."""

    def row_max(self, z, want_argmax: bool, want_second: bool):
        if want_second:
            top = z.topk(2, dim=1)
            return top.values[:, 0], top.indices[:, 0], top.values[:, 1]
        if want_argmax:
            m, a = z.max(dim=1)
            return m, a, None
        return z.amax(dim=1), None, None

    def best_other(self, z, t, m, e_without_target, second):
        # the two largest logits: the first unless the target is it
        return torch.where(z.gather(1, t.unsqueeze(1)).squeeze(1) >= m, second, m)

    def zero_ignored(self, g, valid):
        g.masked_fill_(~valid.unsqueeze(1), 0.0)  # every row looked at: no index list read back

    def wrong_argmax(self, e, t, norm: Normaliser) -> WrongArgmax:
        mask = (norm.sum_exp < 2.0) & (norm.z_target < norm.row_max)
        a = norm.argmax.unsqueeze(1)
        e_a = e.gather(1, a)
        e.scatter_(1, a, 0.0)
        rest = e.sum(1)
        e.scatter_(1, a, e_a)
        cols = torch.where(mask, norm.argmax, t)
        rows = torch.arange(e.shape[0], device=e.device)
        return WrongArgmax(rows, cols, 1.0 / norm.sum_exp, rest / norm.sum_exp, mask)


# -- stages ----------------------------------------------------------------------
def normalise(z, t, e, scan, want_argmax: bool, want_best_other: bool) -> Normaliser:
    """Fills ``e`` with exp(z − m). The sum without the target is taken on its
    own: 1 − p_y = that sum / Σe and log p_y = −log1p(that sum / e_y) then stay
    exact as p_y → 1 (no cancellation)."""
    m, argmax, second = scan.row_max(z, want_argmax, want_best_other)
    col = t.unsqueeze(1)
    torch.sub(z, m.unsqueeze(1), out=e).exp_()
    e_t = e.gather(1, col)
    e.scatter_(1, col, 0.0)
    rest_t = e.sum(1)
    best_other = scan.best_other(z, t, m, e, second) if want_best_other else None
    e.scatter_(1, col, e_t)
    e_t = e_t.squeeze(1)
    return Normaliser(m, rest_t + e_t, rest_t, e_t, z.gather(1, col).squeeze(1), argmax, best_other)


def cross_entropy(z, norm: Normaliser, w: Weights):
    """(nll, CE) per row, the CE written as fairseq writes it, so that ρ = 0
    equals it: (1 − ε − ε_i)·nll + ε_i·(−Σ_v log p_v), Σ_v log p_v = Σ_v z_v − V·lse."""
    lse = norm.row_max + norm.sum_exp.log()
    e_t = norm.e_target
    log_p_t = torch.where(e_t > 1e-30, -torch.log1p(norm.rest_of_target / e_t.clamp_min(1e-30)), norm.z_target - lse)
    nll = -log_p_t
    if w.eps == 0:
        return nll, nll
    return nll, (1.0 - w.eps - w.eps_i) * nll + w.eps_i * (w.V * lse - z.sum(1))


def fast_log_bonus(spec: BonusSpec) -> bool:
    """The paper's bonus (log, no start, LE ≥ ½) with bonus smoothing: its bulk
    pass (entries with p ≤ ½) needs no branches: B = log(1 − p), D = 1 − 1/(1 − p)."""
    return spec.bonus == "log" and spec.bonus_start == 0.0 and spec.log_end >= 0.5


def bonus_sums(spec, w: Weights, p, t, norm: Normaliser, wrong: Optional[WrongArgmax], work, need_s: bool,
               need_entries: bool) -> BonusSums:
    """``p`` holds the chunk's probabilities. The target and a wrong argmax
    come from their exact 1 − p; every other entry has p ≤ ½, where 1 − p by
    subtraction is exact enough and the tangent (LE ≥ ½) or the clamp (LE = 1)
    never applies."""
    p_t, omp_t = norm.e_target / norm.sum_exp, norm.rest_of_target / norm.sum_exp
    b_t, d_t = spec.curve(p_t, omp_t)
    zero = torch.zeros_like(b_t)
    if w.lam == 0 or wrong is None:
        s_rest = zero
        return BonusSums(w.rho * b_t, (1.0 - w.lam) * d_t + s_rest, s_rest, d_t, zero[:0], None)
    b_rest, d_rest, d_entries = _bulk_sums(spec, p, t, wrong, work, need_s, need_entries)
    b_w, d_w = spec.curve(wrong.p, wrong.one_minus_p)
    if wrong.mask is not None:
        b_w, d_w = torch.where(wrong.mask, b_w, 0.0), torch.where(wrong.mask, d_w, 0.0)
    b_rest.index_add_(0, wrong.rows, b_w)
    bonus = w.rho * ((1.0 - w.lam) * b_t + w.lam_i * b_rest)
    if not need_s:
        return BonusSums(bonus, zero, zero, d_t, d_w, None)
    s_rest = w.lam_i * d_rest.index_add_(0, wrong.rows, d_w)
    return BonusSums(bonus, (1.0 - w.lam) * d_t + s_rest, s_rest, d_t, d_w, d_entries)


def _bulk_sums(spec, p, t, wrong: WrongArgmax, work, need_s: bool, need_entries: bool):
    """Σ B(p_v), Σ D(p_v) over the entries that are neither the target nor a
    wrong argmax, and D entry by entry (0 at those two) where wanted."""
    t_col = t.unsqueeze(1)
    if fast_log_bonus(spec):
        # a chunk-sized work buffer (the second, which this path always has), reused across chunks (no fresh pages)
        u = torch.sub(_ONE, p, out=work[: p.shape[0]])
        u.scatter_(1, t_col, 1.0)  # excluded entries contribute log 1 = 0 and D = 0
        u[wrong.rows, wrong.cols] = 1.0
        # Σ_v log(1 − p_v) = log Π_v (1 − p_v): one log per row instead of one per
        # entry. No underflow: every factor is >= ½ and, as log(1 − p) >= −2 ln2·p
        # there and Σ p <= 1, the product is >= ¼.
        b_rest = u.prod(1).log_()
        if not need_s:
            return b_rest, None, None
        d = u.reciprocal_().neg_().add_(1.0)  # 1 − 1/(1 − p) = −p/(1 − p)
        return b_rest, d.sum(1), (d if need_entries else None)
    b, d = spec.curve(p, 1.0 - p)
    for x in (b, d):
        x.scatter_(1, t_col, 0.0)
        x[wrong.rows, wrong.cols] = 0.0
    return b.sum(1), d.sum(1), (d if need_entries else None)


def row_state(w: Weights, norm: Normaliser, sums: BonusSums, t, wrong: Optional[WrongArgmax]) -> RowState:
    """∂loss/∂z_j = (p_j − q_j) + ρ·(q'_j D(p_j) − p_j S). Off the target and a
    wrong argmax that is p_j·(1 − ρS) + ρλ_i D(p_j) − ε_i (``coef`` = 1 − ρS);
    the target, from 1 − p_y in fp32 so that it does not cancel as p → 1:
        −(1 − p_y) + ε + ρ·((1 − λ) D(p_y)(1 − p_y) − p_y S_rest);
    a wrong argmax a the same way, since with an unbounded D its two terms
    cancel as p_a → 1:
        p_a − ε_i + ρ·(λ_i D(p_a)(1 − p_a) − p_a (S − λ_i D(p_a)))."""
    p_t, omp_t = norm.e_target / norm.sum_exp, norm.rest_of_target / norm.sum_exp
    rho = w.rho
    coef = 1.0 - rho * sums.s_total
    g_t = w.eps - omp_t + rho * ((1.0 - w.lam) * sums.d_target * omp_t - p_t * sums.s_rest)
    g_a, col = g_t.clone(), t.clone()
    if wrong is not None and wrong.rows.numel():
        s_w = sums.s_total.index_select(0, wrong.rows) - w.lam_i * sums.d_wrong
        fixed = wrong.p - w.eps_i + rho * (w.lam_i * sums.d_wrong * wrong.one_minus_p - wrong.p * s_w)
        if wrong.mask is not None:
            fixed = torch.where(wrong.mask, fixed, g_t)
        g_a.index_copy_(0, wrong.rows, fixed)
        col.index_copy_(0, wrong.rows, wrong.cols)
    return RowState(norm.row_max, 1.0 / norm.sum_exp, coef, g_t, g_a, col)


def write_gradient(p, d_entries, rows: RowState, t, scale, w: Weights, out):
    """The gradient rows × ``scale`` (one fp32 factor per row: the mean's 1/n,
    the upstream gradient, 0 on ignored rows) into ``out``; ``p`` (fp32) is
    overwritten unless ``out`` is an fp32 buffer of its own."""
    sc = scale.unsqueeze(1)
    direct = out.dtype == torch.float32
    g = torch.mul(p, (rows.coef * scale).unsqueeze(1), out=out if direct else p)
    if d_entries is not None:
        g.addcmul_(d_entries, sc, value=w.rho * w.lam_i)
    if w.eps_i > 0:
        g.sub_(sc * w.eps_i)
    g.scatter_(1, rows.argmax_col.unsqueeze(1), (rows.grad_argmax * scale).unsqueeze(1))
    g.scatter_(1, t.unsqueeze(1), (rows.grad_target * scale).unsqueeze(1))
    if not direct:
        out.copy_(g)


def d_entries_of(spec, p, work):
    """D(p) entry by entry, for the gradient (the target and argmax entries are
    overwritten by :func:`write_gradient`, so their value does not matter)."""
    if fast_log_bonus(spec):
        return torch.sub(_ONE, p, out=work[: p.shape[0]]).reciprocal_().neg_().add_(1.0)
    return spec.curve(p, 1.0 - p)[1]


# -- the chunk loops -----------------------------------------------------------------
class _Call:
    """One call's inputs, outputs and constants, shared by its chunks."""

    def __init__(self, z, targets: Targets, spec: BonusSpec, sync_free: bool, chunk_rows):
        N, V = z.shape
        self.z, self.t, self.valid, self.spec = z, targets.safe, targets.valid, spec
        self.w = weights(spec, V)
        self.scan = SyncFreeScan() if sync_free else IndexedScan()
        self.step = max(1, chunk_rows if chunk_rows else CHUNK_ELEMENTS // V)
        self.exact_wrong = self.w.active and self.w.lam > 0
        self.buffers = 2 if (self.exact_wrong and fast_log_bonus(spec)) else 1

    def spans(self):
        N = self.z.shape[0]
        return [(c0, min(c0 + self.step, N)) for c0 in range(0, N, self.step)]

    def make_work(self):
        n = min(self.step, max(self.z.shape[0], 1))
        return [torch.empty(n, self.z.shape[1], dtype=torch.float32, device=self.z.device)
                for _ in range(self.buffers)]

    def run(self, fn):
        spans = self.spans()
        run_chunks(fn, spans, self.make_work, cpu_workers(self.z, len(spans)))


class _Forward(_Call):
    def __init__(self, z, targets, spec, sync_free, chunk_rows, want_stats, grad_scale, save_rows, grad_out):
        super().__init__(z, targets, spec, sync_free, chunk_rows)
        N, dev = z.shape[0], z.device
        f32 = dict(dtype=torch.float32, device=dev)
        self.want_stats, self.grad_scale, self.grad = want_stats, grad_scale, grad_out
        self.per_token = [torch.zeros(N, **f32) for _ in range(3)]  # loss, nll, bonus
        self.per_row = [torch.zeros(N, **f32) for _ in range(2)] + [torch.zeros(N, dtype=torch.bool, device=dev)]
        self.rows = RowState.empty(N, dev) if save_rows else None
        self.need_s = save_rows or grad_out is not None

    def chunk(self, c0, c1, work):
        z, t, w = self.z[c0:c1].float(), self.t[c0:c1], self.w
        e = work[0][: c1 - c0]
        norm = normalise(z, t, e, self.scan, self.exact_wrong or self.want_stats, self.want_stats)
        nll, ce = cross_entropy(z, norm, w)
        if self.want_stats:
            p_t, margin, correct = self.per_row
            p_t[c0:c1] = norm.e_target / norm.sum_exp
            margin[c0:c1] = norm.z_target - norm.best_other
            correct[c0:c1] = norm.z_target > norm.best_other
        wrong = self.scan.wrong_argmax(e, t, norm) if self.exact_wrong else None
        p = e.mul_(norm.sum_exp.reciprocal().unsqueeze(1))
        if w.active:
            now = self.grad is not None
            sums = bonus_sums(self.spec, w, p, t, norm, wrong, work[1] if len(work) > 1 else None,
                              self.need_s, now)
            bonus = sums.bonus
        else:
            sums, bonus = None, torch.zeros_like(nll)
        keep = self.valid[c0:c1]
        loss, nll_out, bonus_out = self.per_token
        loss[c0:c1] = torch.where(keep, ce + bonus, 0.0)  # an ignored row adds nothing, NaN or inf included
        nll_out[c0:c1] = torch.where(keep, nll, 0.0)
        bonus_out[c0:c1] = torch.where(keep, bonus, 0.0)
        if not self.need_s:
            return
        rows = row_state(w, norm, sums if sums is not None else _no_bonus(norm), t, wrong)
        if self.rows is not None:
            self.rows.store(c0, c1, rows)
        if self.grad is not None:
            write_gradient(p, sums.d_entries if sums is not None else None, rows, t, self.grad_scale[c0:c1], w,
                           self.grad[c0:c1])
            self.scan.zero_ignored(self.grad[c0:c1], keep)

    def result(self) -> KernelForward:
        stats = diagnostics(self.valid, *self.per_row) if self.want_stats else None
        return KernelForward(*self.per_token, stats, self.rows, self.grad)


def _no_bonus(norm: Normaliser) -> BonusSums:
    zero = torch.zeros_like(norm.sum_exp)
    return BonusSums(zero, zero, zero, zero, zero[:0], None)


class _Backward(_Call):
    def __init__(self, z, targets, spec, sync_free, chunk_rows, rows: RowState, grad_scale, grad_out):
        super().__init__(z, targets, spec, sync_free, chunk_rows)
        self.rows, self.grad_scale, self.grad = rows, grad_scale, grad_out

    def chunk(self, c0, c1, work):
        rows = self.rows.slice(c0, c1)
        p = torch.sub(self.z[c0:c1].float(), rows.row_max.unsqueeze(1), out=work[0][: c1 - c0])
        p.exp_().mul_(rows.inv_sum.unsqueeze(1))
        d = d_entries_of(self.spec, p, work[1] if len(work) > 1 else None) if self.exact_wrong else None
        write_gradient(p, d, rows, self.t[c0:c1], self.grad_scale[c0:c1], self.w, self.grad[c0:c1])
        self.scan.zero_ignored(self.grad[c0:c1], self.valid[c0:c1])


class ChunkedKernel:
    """The chunked implementation behind the shared autograd function (ops/function.py)."""

    name = "chunked"

    @staticmethod
    def eager_gradient(z, sync_free: bool) -> bool:
        """fp32 logits on the CPU: the gradient is formed in the forward pass,
        while each chunk's probabilities are in cache."""
        return z.dtype == torch.float32 and not sync_free

    @staticmethod
    def forward(z, targets: Targets, spec: BonusSpec, *, want_stats: bool, grad_scale=None, save_rows=False,
                inplace=False, sync_free=False, chunk_rows=None) -> KernelForward:
        grad = None
        if grad_scale is not None:
            grad = z if inplace else torch.empty_like(z)
        call = _Forward(z, targets, spec, sync_free, chunk_rows, want_stats, grad_scale, save_rows, grad)
        call.run(call.chunk)
        return call.result()

    @staticmethod
    def backward(z, targets: Targets, spec: BonusSpec, rows: RowState, grad_scale, *, inplace=False,
                 sync_free=False, chunk_rows=None):
        grad = z if inplace else torch.empty_like(z)
        call = _Backward(z, targets, spec, sync_free, chunk_rows, rows, grad_scale, grad)
        call.run(call.chunk)
        return grad
