"""``impl="chunked"``: exact encouraging loss in pure PyTorch with the analytic
gradient of docs/design.md §2.

Tokens are processed in row chunks small enough to stay in cache; everything is
computed in fp32 whatever the input dtype. The gradient is produced during the
forward pass, so the only vocabulary-sized buffers are the gradient itself
(or none, with ``inplace_backward=True``, which writes it over the logits) and
a few chunk-sized temporaries.
"""
from __future__ import annotations

import threading

import torch

from .bonus import BonusSpec
from .common import LOW_PRECISION, ELResult, finish_forward, reduce_tokens, take_saved_grad, token_stats, upstream_rows

_ONE = torch.tensor(1.0)
# Elements of one fp32 chunk (4 MiB): per chunk a worker thread runs a few
# dozen tensor operations, and larger chunks amortise their Python overhead;
# fastest of 2^18..2^21 on the benchmark machine (2 cores), fwd and fwd+bwd.
CHUNK_ELEMENTS = 1 << 20


def _chunk_rows(V: int, chunk_rows: int | None) -> int:
    return max(1, chunk_rows if chunk_rows else CHUNK_ELEMENTS // V)


def cpu_workers(x: torch.Tensor, n_chunks: int) -> int:
    """How many threads walk the chunks: torch's intra-op thread count on the
    CPU (one on a GPU, or with a single chunk)."""
    if x.is_cuda or n_chunks < 2:
        return 1
    return max(1, min(torch.get_num_threads(), n_chunks))


# Parallel work on the CPU. Each chunk is a few dozen small tensor operations;
# run with torch's own intra-op threads, every one of them is a parallel region
# ending in a barrier, thousands per call, and when the cores are shared (data
# loaders, a second job) a barrier waits for a thread the OS has descheduled:
# measured 4-16 s instead of 0.6 s with two other busy processes. Instead, each
# worker thread runs whole chunks with single-threaded operations and takes
# the next chunk when it is done: no barrier until the end, and a thread that
# is descheduled delays only itself.
# torch.set_num_threads also resizes a process-wide thread pool: never from two
# threads at once.
_SET_THREADS = threading.Lock()


def run_chunks(fn, spans, make_work, workers: int) -> list:
    """``[fn(c0, c1, work) for c0, c1 in spans]``, by ``workers`` threads."""
    if workers <= 1:
        work = make_work()
        return [fn(c0, c1, work) for c0, c1 in spans]
    out = [None] * len(spans)
    errors = []
    todo = iter(range(len(spans)))
    lock = threading.Lock()
    saved = torch.get_num_threads()

    def worker():
        with _SET_THREADS:
            torch.set_num_threads(1)  # this thread's operations run on it alone
        torch.set_grad_enabled(False)  # per thread: new threads start with autograd on
        try:
            work = make_work()
            while True:
                with lock:
                    i = next(todo, None)
                if i is None or errors:
                    return
                out[i] = fn(*spans[i], work)
        except BaseException as e:  # re-raised in the caller
            errors.append(e)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers - 1)]
    for th in threads:
        th.start()
    grad_mode = torch.is_grad_enabled()
    try:
        worker()  # the calling thread is one of the workers
        for th in threads:
            th.join()
    finally:
        with _SET_THREADS:
            torch.set_num_threads(saved)
        torch.set_grad_enabled(grad_mode)
    if errors:
        raise errors[0]
    return out


def _bonus_rest(spec: BonusSpec, fast_log: bool, p, t, rows, cols, p_a, omp_a, mask=None, work=None, need_d=True):
    """Σ_{v≠y} B(p_v), Σ_{v≠y} D(p_v) and the row-wise D (0 at the target);
    the last two are None when ``need_d`` is off (no gradient wanted).

    Only a row's argmax can have p > 0.5, where 1 - p by subtraction loses
    accuracy and where the tangent (LE >= 0.5) or the clamp (LE = 1) applies;
    that entry (``rows``, ``cols``: rows whose argmax is not the target and
    has p > 0.5) is left out of the bulk pass and added back from the exact
    ``p_a``, ``1 - p_a`` of those rows (with ``mask``: every row is listed,
    those outside the mask pointed at their target column with a zero
    fix-up, so nothing waits for the device). For the paper's bonus (log,
    no start, LE >= 0.5) the bulk pass needs no branches:

        B = log(1-p),  D = -p/(1-p) = 1 - 1/(1-p)   for p <= 0.5.
    """
    t_col = t.unsqueeze(1)
    d = None
    if fast_log:
        # a chunk-sized work buffer, reused across chunks (no fresh pages)
        u = torch.sub(_ONE, p, out=work[0][: p.shape[0]]) if work else torch.rsub(p, 1.0)
        u.scatter_(1, t_col, 1.0)  # excluded entries contribute log 1 = 0 and D = 0
        u[rows, cols] = 1.0
        # Σ_v log(1 - p_v) = log Π_v (1 - p_v): one log per row instead of one
        # per entry. No underflow: every factor is >= 1/2 and, as log(1-p) >=
        # -2 ln2 p there and Σ p <= 1, the product is >= 1/4.
        b_rest = u.prod(1).log_()
        if need_d:
            d = u.reciprocal_().neg_().add_(1.0)  # 1 - 1/(1-p) = -p/(1-p)
    else:
        b, d = spec.curve(p, 1.0 - p)
        for x in (b, d) if need_d else (b,):
            x.scatter_(1, t_col, 0.0)
            x[rows, cols] = 0.0
        b_rest = b.sum(1)
        d = d if need_d else None
    d_rest = d.sum(1) if need_d else None
    if rows.numel():
        b_x, d_x = spec.curve(p_a, omp_a)
        if mask is not None:
            b_x, d_x = torch.where(mask, b_x, torch.zeros_like(b_x)), torch.where(mask, d_x, torch.zeros_like(d_x))
        b_rest.index_add_(0, rows, b_x)
        if need_d:
            d_rest.index_add_(0, rows, d_x)
            d[rows, cols] = d_x
    return b_rest, d_rest, d, (rows, cols)


def chunked_compute(
    logits2d: torch.Tensor,
    t: torch.Tensor,
    valid: torch.Tensor,
    spec: BonusSpec,
    scale: float,
    need_grad: bool,
    want_stats: bool,
    chunk_rows: int | None = None,
    inplace: bool = False,
    sync_free: bool | None = None,
):
    """Per-token (loss, nll, bonus) in fp32, the gradient of ``scale * Σ loss``
    (or None) and the summed diagnostics (or None). ``scale`` is a number or
    one fp32 factor per row (the upstream gradient folded in): the gradient is
    formed in fp32 and stored once in the logits' dtype.

    ``sync_free`` (default: on for CUDA tensors) replaces the per-chunk steps
    that wait for the device (``nonzero`` to find the rare confidently-wrong
    rows, the padding rows) with masked work on every row of the chunk, so a
    GPU never stalls inside the loop; the results are the same."""
    N, V = logits2d.shape
    dev = logits2d.device
    if sync_free is None:
        sync_free = logits2d.is_cuda
    loss_tok = torch.zeros(N, dtype=torch.float32, device=dev)
    nll_tok = torch.zeros_like(loss_tok)
    bonus_tok = torch.zeros_like(loss_tok)
    stats = torch.zeros(5, dtype=torch.float64, device=dev) if want_stats else None

    # Rows are walked in contiguous chunks; padding rows are computed and then
    # zeroed (cheaper than gathering the valid rows), unless padding dominates.
    n_valid = int(valid.sum())
    compact = n_valid < 0.75 * N
    rows_idx = valid.nonzero().squeeze(-1) if compact else None
    n_rows = n_valid if compact else N
    all_valid = n_valid == N

    grad = None
    if need_grad:
        if inplace:
            grad = logits2d
            if compact:
                grad.masked_fill_(~valid.unsqueeze(1), 0)
        else:
            grad = (torch.zeros_like if compact else torch.empty_like)(logits2d)

    eps = spec.label_smoothing
    eps_i = eps / (V - 1)
    active = spec.active
    rho = spec.bonus_weight
    lam = spec.smoothing_b if active else 0.0
    lam_i = lam / (V - 1)
    step = _chunk_rows(V, chunk_rows)
    # The paper's bonus (log, no start, LE >= 0.5) with λ > 0 takes a fast path.
    fast_log = active and lam > 0 and spec.bonus == "log" and spec.bonus_start == 0.0 and spec.log_end >= 0.5
    def chunk(c0, c1, work):
        """Rows c0:c1 (of the valid rows when compact): writes their loss parts
        and gradient rows, returns their diagnostics (or None)."""
        st = None
        if not compact:
            sl = slice(c0, c1)
            z = logits2d[sl]
            tc = t[sl]
            vc = None if all_valid else valid[sl]
        else:
            sl = rows_idx[c0:c1]
            z = logits2d.index_select(0, sl)
            tc = t.index_select(0, sl)
            vc = None
        z = z.float()
        tcu = tc.unsqueeze(1)
        if isinstance(scale, torch.Tensor):  # per row
            sc = scale[sl] if not compact else scale.index_select(0, sl)
            sc_col = sc.unsqueeze(1)
        else:
            sc = sc_col = scale

        # Normaliser from e = exp(z - max): the sum over the non-target classes
        # s_o is taken on its own, so 1 - p_t = s_o / Σe and
        # lp_t = -log1p(s_o / e_t) stay accurate as p_t → 1 (no cancellation).
        # Diagnostics on a GPU: the two largest logits per row in one pass
        # (the max, the argmax and the best logit other than the target). On
        # the CPU the best other logit comes out of the normaliser's pass below.
        if want_stats and sync_free:
            top2 = z.topk(2, dim=1)
            zmax, amax = top2.values[:, 0], top2.indices[:, 0]
        else:
            top2, amax = None, None
            zmax = z.amax(dim=1)
        p = torch.sub(z, zmax.unsqueeze(1), out=work[0][: c1 - c0])
        p.exp_()
        e_t = p.gather(1, tcu)
        p.scatter_(1, tcu, 0.0)
        s_o = p.sum(1)
        if want_stats and not sync_free:
            # the best non-target logit, from the largest non-target exp(z - max)
            e_bo = p.amax(1)
            best_other = zmax + e_bo.log()
            under = (e_bo == 0).nonzero().squeeze(1)  # exp underflowed: the target leads by > 87
            if under.numel():
                zu = z.index_select(0, under).scatter_(1, tcu.index_select(0, under), float("-inf"))
                best_other.index_copy_(0, under, zu.amax(1))
        p.scatter_(1, tcu, e_t)
        e_t = e_t.squeeze(1)
        sumexp = s_o + e_t
        z_t = z.gather(1, tcu).squeeze(1)
        if lam > 0:
            # Rows whose argmax a is not the target and has p_a = 1/Σe > 0.5
            # (confidently wrong; rare): a and the exact 1 - p_a = Σ_{v≠a} e_v / Σe.
            wrong_mask = (sumexp < 2.0) & (z_t < zmax)
            if sync_free:
                # every row, the non-wrong ones pointed at their target column
                # (already excluded) with a zero fix-up: no wait for the device
                a_all = (amax if amax is not None else z.argmax(1)).unsqueeze(1)
                p.scatter_(1, a_all, 0.0)
                s_na = p.sum(1)
                p.scatter_(1, a_all, 1.0)  # e_a = exp(0)
                rows_all = torch.arange(c1 - c0, device=dev)
                cols = torch.where(wrong_mask, a_all.squeeze(1), tc)
                fix_in = (rows_all, cols, 1.0 / sumexp, s_na / sumexp, wrong_mask)
            elif bool((wrong := wrong_mask.nonzero().squeeze(1)).numel()):
                e_w = p.index_select(0, wrong)
                # the argmax from exp(z - max) itself: in these rows it is the one
                # entry with e >= 1/2 of the sum (e = 1), so no tie is possible
                a_w = e_w.argmax(1)
                e_w.scatter_(1, a_w.unsqueeze(1), 0.0)
                s_w = sumexp.index_select(0, wrong)
                fix_in = (wrong, a_w, 1.0 / s_w, e_w.sum(1) / s_w, None)
            else:
                empty = wrong.new_zeros(0)
                fix_in = (wrong, empty, p.new_zeros(0), p.new_zeros(0), None)
        lse = zmax + sumexp.log()
        lp_t = torch.where(e_t > 1e-30, -torch.log1p(s_o / e_t.clamp_min(1e-30)), z_t - lse)
        omp_t = s_o / sumexp
        p.mul_(sumexp.reciprocal().unsqueeze(1))

        # Label-smoothed CE written as fairseq writes it, so ρ = 0 matches it:
        #   (1 - ε - ε_i)·nll + ε_i·(-Σ_v lp_v),  ε_i = ε/(V-1),  Σ_v lp_v = Σ_v z_v - V·lse.
        nll = -lp_t
        ce = (1.0 - eps - eps_i) * nll + eps_i * (V * lse - z.sum(1)) if eps > 0 else nll

        if want_stats:
            st = token_stats(z, tc, lp_t, torch.ones_like(tc, dtype=torch.bool) if vc is None else vc, top2,
                             best_other=None if sync_free else best_other)

        # Bonus ρ·Σ_v q'_v B(p_v) with q'_y = 1-λ, q'_v = λ_i = λ/(V-1).
        p_t = e_t / sumexp
        if active:
            b_t, d_t = spec.curve(p_t, omp_t)
            if lam > 0:
                b_rest, d_rest, d_all, fix = _bonus_rest(spec, fast_log, p, tc, *fix_in, work=work[1:],
                                                         need_d=grad is not None)
                s_rest = lam_i * d_rest if d_rest is not None else None
                bonus = rho * ((1.0 - lam) * b_t + lam_i * b_rest)
            else:
                d_all, fix = None, None
                s_rest = torch.zeros_like(d_t)
                bonus = rho * b_t
            s_tot = (1.0 - lam) * d_t + s_rest if grad is not None else None  # S = Σ_v q'_v D(p_v)
        else:
            bonus = torch.zeros_like(nll)

        if vc is not None:  # padding rows inside a contiguous chunk
            keep = vc.to(nll.dtype)
            ce, nll, bonus = ce * keep, nll * keep, bonus * keep
        if not compact:
            loss_tok[sl] = ce + bonus
            nll_tok[sl] = nll
            bonus_tok[sl] = bonus
        else:
            loss_tok.index_copy_(0, sl, ce + bonus)
            nll_tok.index_copy_(0, sl, nll)
            bonus_tok.index_copy_(0, sl, bonus)

        if grad is None:
            return st
        # ∂loss/∂z_j = p_j - q_j + ρ·(q'_j D(p_j) - p_j S). Off-target that is
        #   p_j·(1 - ρS) + ρ λ_i D(p_j) - ε_i,
        # and on target, kept in fp32 from 1-p_t so it does not cancel as p → 1:
        #   -(1-p_t) + ε + ρ·((1-λ) D(p_t)(1-p_t) - p_t S_rest).
        g_t = eps - omp_t
        if active:
            coef = (1.0 - rho * s_tot) * sc
            g_t = g_t + rho * ((1.0 - lam) * d_t * omp_t - p_t * s_rest)
        else:
            coef = torch.ones_like(nll) * sc
        direct = not compact and grad.dtype == torch.float32
        g = torch.mul(p, coef.unsqueeze(1), out=grad[sl]) if direct else p.mul_(coef.unsqueeze(1))
        if active and d_all is not None:
            if isinstance(sc, torch.Tensor):
                g.addcmul_(d_all, sc_col, value=rho * lam_i)
            else:
                g.add_(d_all, alpha=rho * lam_i * sc)
        if eps_i > 0:
            g.sub_(sc_col * eps_i)
        g.scatter_(1, tcu, (g_t * sc).unsqueeze(1))
        if active and d_all is not None and fix[0].numel():
            # a confident wrong argmax a: exact like the target, since with an
            # unbounded D its two terms cancel as p_a → 1:
            #   p_a - ε_i + ρ·(λ_i D(p_a)(1-p_a) - p_a (S - λ_i D(p_a)))
            rows, cols = fix
            pa, oa, mask = fix_in[2], fix_in[3], fix_in[4]
            da = d_all[rows, cols]
            s_wo = s_tot.index_select(0, rows) - lam_i * da
            sc_r = sc.index_select(0, rows) if isinstance(sc, torch.Tensor) else sc
            fixed = (pa - eps_i + rho * (lam_i * da * oa - pa * s_wo)) * sc_r
            if mask is not None:  # sync-free: rows that are not wrong keep their value
                fixed = torch.where(mask, fixed, g[rows, cols])
            g[rows, cols] = fixed
        if vc is not None:
            if sync_free:
                g.masked_fill_(~vc.unsqueeze(1), 0.0)
            else:
                pad_rows = (~vc).nonzero().squeeze(1)
                if pad_rows.numel():
                    g.index_fill_(0, pad_rows, 0.0)
        if direct:
            return st
        if not compact:
            grad[sl].copy_(g)
        else:
            grad.index_copy_(0, sl, g.to(grad.dtype))
        return st

    # Chunk-sized work buffers are allocated once per worker: fresh 2 MiB
    # allocations per chunk would each be mapped and faulted in again.
    def make_work():
        return [torch.empty(min(step, max(n_rows, 1)), V, dtype=torch.float32, device=dev)
                for _ in range(2 if fast_log else 1)]

    spans = [(c0, min(c0 + step, n_rows)) for c0 in range(0, n_rows, step)]
    parts = run_chunks(chunk, spans, make_work, cpu_workers(logits2d, len(spans)))
    if want_stats:
        for st in parts:  # in chunk order: the same sums whatever the threads did
            stats += st
    return loss_tok, nll_tok, bonus_tok, grad, stats


class ChunkedEncouragingLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits2d, target1d, spec, ignore_index, reduction, want_stats, chunk_rows, inplace):
        valid = target1d != ignore_index
        t = torch.where(valid, target1d, torch.zeros_like(target1d)).long()
        n_valid = valid.sum()
        scale = 1.0 / max(int(n_valid), 1) if reduction == "mean" else 1.0
        # fp32 logits: the gradient is formed during this pass. fp16/bf16: in
        # backward, where the upstream gradient (a loss scale up to 2^16) is
        # known, so it is formed in fp32 with it and cast once; formed in the
        # input dtype first, it would overflow or flush to zero.
        deferred = ctx.needs_input_grad[0] and logits2d.dtype in LOW_PRECISION
        need_grad = ctx.needs_input_grad[0] and not deferred
        loss_tok, nll_tok, bonus_tok, grad, stats = chunked_compute(
            logits2d, t, valid, spec, scale, need_grad, want_stats, chunk_rows, inplace
        )
        ctx.grad = grad
        ctx.reduction = reduction
        ctx.deferred = (logits2d, t, valid, spec, scale, chunk_rows, inplace) if deferred else None
        return finish_forward(ctx, (loss_tok, nll_tok, bonus_tok), stats, n_valid, reduction, logits2d.device)

    @staticmethod
    def backward(ctx, g_loss, *unused):
        if ctx.deferred is not None:
            z, t, valid, spec, scale, chunk_rows, inplace = ctx.deferred
            ctx.deferred = None
            rows = upstream_rows(g_loss, z.shape[0]) * scale
            grad = chunked_compute(z, t, valid, spec, rows, True, False, chunk_rows, inplace)[3]
            return grad, None, None, None, None, None, None, None
        return take_saved_grad(ctx, g_loss, "chunked"), None, None, None, None, None, None, None


def chunked_forward(
    logits, target, spec: BonusSpec, ignore_index: int, reduction: str, want_stats: bool,
    chunk_rows: int | None = None, inplace_backward: bool = False,
) -> ELResult:
    V = logits.size(-1)
    shape = target.shape
    z = logits.reshape(-1, V)
    if not z.is_contiguous():
        z = z.contiguous()
    tgt = target.reshape(-1)
    if torch.is_grad_enabled() and logits.requires_grad:
        loss, nll, bonus, stats = ChunkedEncouragingLoss.apply(
            z, tgt, spec, ignore_index, reduction, want_stats, chunk_rows, inplace_backward
        )
    else:
        with torch.no_grad():
            valid = tgt != ignore_index
            t = torch.where(valid, tgt, torch.zeros_like(tgt)).long()
            lt, nt, bt, _, stats = chunked_compute(z, t, valid, spec, 1.0, False, want_stats, chunk_rows)
            n_valid = valid.sum()
            loss, nll, bonus = (reduce_tokens(x, n_valid, reduction) for x in (lt, nt, bt))
    if reduction == "none":
        loss, nll, bonus = loss.view(shape), nll.view(shape), bonus.view(shape)
    return ELResult(loss, nll, bonus, stats if want_stats else None)
