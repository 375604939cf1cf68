"""What a low-precision gradient is checked against: the float64 gradient of
upstream x loss, and the error fp32 arithmetic cannot avoid."""
import torch

from tests.helpers.reference import el_reference, reduce

OPTS = dict(label_smoothing=0.1, log_end=0.5)


def _logits(N, V, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, V, generator=g, dtype=torch.float64) * 2.0
    t = torch.randint(0, V, (N,), generator=g)
    z[::2].scatter_(1, t[::2, None], 14.0)  # half the rows confidently right, as in a trained model
    t[3] = -100
    return z.to(dtype).double(), t  # the logits as the low-precision model produced them


def _size(impl):
    return (16, 3000) if impl == "triton" and not torch.cuda.is_available() else (64, 32000)


def expected_gradient(z, t, reduction, upstream):
    """float64 gradient of upstream x loss (the reference, scaled first), and the
    size of the terms each entry is computed from: |grad| + |u| (p_j + q_j + q'_j),
    u the factor of the entry's row. fp32 cannot do better than a few units of
    its rounding (2^-24) of that: p_j - q_j cancels when p_j is close to q_j."""
    x = z.double().requires_grad_(True)
    loss = reduce(el_reference(x, t, **OPTS)[0], t, reduction)
    (loss * upstream).sum().backward()
    V = z.shape[-1]
    n = int((t != -100).sum())
    u = upstream if reduction != "mean" else upstream / n
    u = u.reshape(-1, 1) if u.dim() else u
    smooth = 2 * OPTS["label_smoothing"] / (V - 1)
    terms = x.grad.abs() + u.abs() * (torch.softmax(z.double(), -1) + smooth)
    terms[t == -100] = 0
    return x.grad, terms


FP32_SLACK = 2.0**-20  # 16 units of fp32 rounding


def check_cast_once(got, exact, terms, dtype):
    """got (dtype) against exact (float64): finite wherever exact cast to dtype is,
    not flushed to zero where that cast is not (beyond fp32's reach of the boundary),
    and within the one rounding of that cast plus fp32's error on ``terms``."""
    cast = exact.to(dtype)
    fin = torch.isfinite(cast)
    assert torch.isfinite(got[fin]).all(), "inf/NaN where the scaled-then-cast reference is finite"
    fi = torch.finfo(dtype)
    sub = fi.eps * fi.tiny  # the smallest subnormal
    slack = FP32_SLACK * terms
    flushable = (cast == 0) | (exact.abs() <= sub / 2 + slack)
    wrongly = (got == 0) & (exact != 0) & ~flushable
    n_got, n_ref = int(((got == 0) & (exact != 0)).sum()), int(((cast == 0) & (exact != 0)).sum())
    assert not wrongly.any(), f"{int(wrongly.sum())} entries flushed to zero that the cast reference keeps " \
                              f"({n_got} flushed in all, the cast reference {n_ref})"
    tol = fi.eps * exact.abs() + sub + slack  # one rounding (subnormals included) + fp32 error
    err = (got.double() - exact).abs()
    bad = ~(err <= tol) & fin
    assert not bad.any(), (f"{int(bad.sum())} entries beyond one rounding, worst {float((err - tol)[bad].max()):.3g} "
                           f"at value {float(exact[bad][0]):.3g}")
