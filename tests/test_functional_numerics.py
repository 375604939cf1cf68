"""Hostile numerics and property-based agreement with the reference, for every implementation (docs/reliability.md)."""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.reference import el_reference, reduce
from tests.helpers import impls
from wce_fairseq.functional import encouraging_loss

# Triton takes part where it runs correctly here (CUDA, or a working CPU interpreter)
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
BONUSES = [dict(), dict(log_end=1.0), dict(log_end=0.75, bonus_start=0.2), dict(bonus="power", bonus_gamma=0.5),
           dict(bonus="cos")]


def _hostile(case, dtype):
    V = 2 if case == "V=2" else 17
    N = 1 if case == "N=1" else 6
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, V, (N,), generator=g)
    if case == "huge":  # logits up to ±1e4 (fp16 caps at 65504, fine)
        z = (torch.rand(N, V, generator=g) * 2 - 1) * 1e4
    elif case == "one_hot":  # p = 1 exactly in fp32
        z = torch.full((N, V), -1e4)
        z[torch.arange(N), t] = 1e4
    elif case == "confidently_wrong":
        z = torch.zeros(N, V)
        z[torch.arange(N), (t + 1) % V] = 60.0
    elif case == "near_one":  # LE = 1 territory: p → 1 but not exactly
        z = torch.zeros(N, V)
        z[torch.arange(N), t] = 14.0
    elif case == "near_one_wrong":  # a wrong class at 1 - p ≈ 3e-4, inside the LE = 1 clamp
        z = torch.zeros(N, V)
        z[torch.arange(N), (t + 1) % V] = 11.0
    elif case == "all_padding":
        z = torch.randn(N, V, generator=g)
        t = torch.full((N,), -100)
    else:  # V=2, N=1: ordinary values on degenerate shapes
        z = torch.randn(N, V, generator=g) * 3
    return z.to(dtype), t


@pytest.mark.parametrize("impl", impls.CONCRETE)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["huge", "one_hot", "confidently_wrong", "near_one", "near_one_wrong", "all_padding",
                                  "V=2", "N=1"])
@pytest.mark.parametrize("opts", BONUSES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "log")
def test_hostile_inputs_are_finite_and_exact(impl, dtype, case, opts):
    z, t = _hostile(case, dtype)
    opts = dict(label_smoothing=0.1, **opts)
    x = z.clone().requires_grad_()
    loss = encouraging_loss(x, t, impl=impl, **opts)
    loss.backward()
    assert torch.isfinite(loss), loss
    assert torch.isfinite(x.grad.float()).all()

    xr = z.double().requires_grad_()
    ref_tok, _, _ = el_reference(xr, t, **opts)
    ref = reduce(ref_tok, t, "mean")
    if torch.isfinite(ref):
        torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-3 * max(1.0, abs(ref.item()) * 1e-3))
        ref.backward()
        if torch.isfinite(xr.grad).all():
            tol = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
            scale = xr.grad.abs().max().clamp_min(1e-3)
            err = (x.grad.double() - xr.grad).abs().max() / scale
            assert err <= tol * (10 if opts.get("log_end") == 1.0 else 1), err


@pytest.mark.parametrize("impl", impls.CONCRETE)
@pytest.mark.parametrize("V", [37, 2500], ids=["one-block", "three-blocks"])  # Triton's CPU block is 1024
@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_confident_wrong_argmax_is_exact(impl, V, offset):
    """LE = 1 with λ > 0: a wrong class at 1 - p ≈ 1e-4…1e-5 sits right on the
    log clamp, where 1 - p by subtraction, or p from z - lse (whose rounding
    is ulp(lse) ≈ 6e-5 at logits near 1000), loses the digits the bonus and
    its gradient need. Rows put the wrong argmax in the first, middle and last
    block, tie two maxima across blocks, and keep one ordinary row. fp32,
    tolerances a few hundred ulps of the float64 reference."""
    N = 6
    g = torch.Generator().manual_seed(5)
    z = torch.randn(N, V, generator=g)
    t = torch.randint(0, V, (N,), generator=g)
    where = [1, V // 2, V - 2, 3, V - 5]
    for r, (col, big) in enumerate(zip(where, [12.0, 14.0, 16.0, 11.0, 13.0])):
        col = col if col != int(t[r]) else col + 1
        z[r, col] = big + math.log(V / 37)  # same 1 - p at either V
    z[3, V - 3] = z[3, 3]  # a tie between blocks: p = 1/2 each
    z = z + offset
    opts = dict(label_smoothing=0.1, bonus_smoothing=0.1, log_end=1.0, bonus_weight=1.0)
    x = z.clone().requires_grad_()
    loss = encouraging_loss(x, t, impl=impl, reduction="sum", **opts)
    loss.backward()
    xr = z.double().requires_grad_()
    ref = el_reference(xr, t, **opts)[0].sum()
    ref.backward()
    assert abs(loss.item() - ref.item()) <= 1e-6 * abs(ref.item())
    err = (x.grad.double() - xr.grad).abs().max() / xr.grad.abs().max()
    assert err <= 2e-6, err


@st.composite
def problems(draw):
    N = draw(st.integers(1, 12))
    V = draw(st.integers(2, 80))
    bonus = draw(st.sampled_from(["log", "power", "cos", "none"]))
    opts = dict(label_smoothing=draw(st.sampled_from([0.0, 0.05, 0.1, 0.3])), bonus=bonus)
    # only options that act with the drawn shape (others are refused)
    if bonus == "log":
        opts["log_end"] = draw(st.sampled_from([0.3, 0.5, 0.75, 1.0]))
    if bonus == "power":
        opts["bonus_gamma"] = draw(st.floats(0.25, 4.0))
    if bonus != "none":
        opts.update(bonus_weight=draw(st.floats(0.0, 3.0)), bonus_start=draw(st.sampled_from([0.0, 0.0, 0.1, 0.6])),
                    bonus_smoothing=draw(st.sampled_from([None, 0.0, 0.2])))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 30.0]))
    seed = draw(st.integers(0, 2**16))
    dtype = draw(st.sampled_from(DTYPES))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    n_ignored = draw(st.integers(0, N))
    return N, V, opts, scale, seed, dtype, reduction, n_ignored


def _check(impl, problem):
    N, V, opts, scale, seed, dtype, reduction, n_ignored = problem
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(N, V, generator=g, dtype=torch.float64) * scale).to(dtype)
    t = torch.randint(0, V, (N,), generator=g)
    t[:n_ignored] = -100
    x = z.clone().requires_grad_()
    out = encouraging_loss(x, t, impl=impl, reduction=reduction, **opts)
    out.sum().backward()
    xr = z.double().requires_grad_()
    ref = reduce(el_reference(xr, t, **opts)[0], t, reduction)
    ref.sum().backward()
    torch.testing.assert_close(out.double(), ref.detach(), rtol=1e-5, atol=1e-4)
    tol = {torch.float32: 1e-4, torch.bfloat16: 1.5e-2, torch.float16: 3e-3}[dtype]
    if opts.get("log_end") == 1.0:
        tol *= 10
    err = (x.grad.double() - xr.grad).abs().max() / xr.grad.abs().max().clamp_min(1e-3)
    assert err <= tol, err


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_property_chunked_matches_reference(problem):
    _check("chunked", problem)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_property_reference_impl_matches_reference(problem):
    _check("reference", problem)


@pytest.mark.skipif(impls.triton_unavailable() is not None, reason=f"impl=triton: {impls.triton_unavailable()}")
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_property_triton_matches_reference(problem):
    _check("triton", problem)
