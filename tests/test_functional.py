"""wce_fairseq.functional: every implementation against the independent
float64 reference (tests/helpers/reference.py), over options, reductions,
shapes, dtypes and ignore_index."""
import pytest
import torch

from tests.helpers import impls
from tests.helpers.data import make_inputs
from tests.helpers.reference import el_reference, reduce
from wce_fairseq.functional import STAT_NAMES, encouraging_loss, encouraging_loss_parts
from wce_fairseq.ops.bonus import BonusSpec

OPTIONS = [
    dict(),
    dict(label_smoothing=0.1),
    dict(label_smoothing=0.1, log_end=0.75),
    dict(label_smoothing=0.1, log_end=1.0),
    dict(log_end=1.0),
    dict(label_smoothing=0.1, log_end=0.5, bonus_start=0.3),
    dict(label_smoothing=0.1, log_end=1.0, bonus_start=0.2),
    dict(label_smoothing=0.1, bonus_smoothing=0.0),
    dict(label_smoothing=0.0, bonus_smoothing=0.2, log_end=0.75),
    dict(bonus="power", bonus_gamma=2.0, label_smoothing=0.1),
    dict(bonus="power", bonus_gamma=0.5, bonus_start=0.1),
    dict(bonus="cos", label_smoothing=0.1),
    dict(bonus="cos", bonus_start=0.5, bonus_smoothing=0.05),
    dict(bonus="none", label_smoothing=0.1),
    dict(label_smoothing=0.1, bonus_weight=0.0),
    dict(label_smoothing=0.1, bonus_weight=2.5, log_end=0.3),
]

# Tolerances on the gradient, relative to its largest entry: the math is fp32
# for every input dtype, so low precision only costs the final rounding.
# The unbounded log (LE = 1) amplifies fp32 rounding by up to 1/(1-p), so it
# gets a 10x looser fp32 bound.
GRAD_TOL = {torch.float32: 3e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def _shapes(impl):
    # the Triton interpreter is slow on the CPU: small shapes there
    if impl == "triton" and not torch.cuda.is_available():
        return [(7, 33), (1, 2), (5, 300)]
    return [(7, 33), (1, 2), (64, 1000), (3, 4, 257)]


def _test_el_once(impl, shape, dtype, opts, reduction, upstream, seed=0):
    logits, target = make_inputs(shape, dtype, seed)
    x = logits.clone().requires_grad_(True)
    out = encouraging_loss(x, target, reduction=reduction, impl=impl, **opts)
    g_up = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float32) if upstream else None
    (out * g_up).sum().backward() if upstream else out.sum().backward()

    xr = logits.double().requires_grad_(True)
    loss_tok, _, _ = el_reference(xr, target, **opts)
    ref = reduce(loss_tok, target, reduction)
    (ref * g_up.double()).sum().backward() if upstream else ref.sum().backward()

    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref.detach(), rtol=2e-6, atol=2e-5)
    assert x.grad.dtype == dtype
    gref = xr.grad
    scale = gref.abs().max().clamp_min(1e-6)
    err = (x.grad.double() - gref).abs().max() / scale
    tol = GRAD_TOL[dtype] * (10 if opts.get("log_end") == 1.0 and dtype == torch.float32 else 1)
    assert err <= tol, f"grad rel err {err:.3g}"


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_options_and_reductions(impl, opts, reduction):
    for shape in _shapes(impl)[:2]:
        _test_el_once(impl, shape, torch.float32, opts, reduction, upstream=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("upstream", [False, True])
def test_shapes_dtypes_upstream(impl, dtype, upstream):
    opts = dict(label_smoothing=0.1, log_end=0.5)
    for shape in _shapes(impl):
        _test_el_once(impl, shape, dtype, opts, "none" if upstream else "mean", upstream)


def test_parts_nll_bonus_and_stats(impl):
    logits, target = make_inputs((9, 40), torch.float32, 3)
    opts = dict(label_smoothing=0.1, log_end=0.75)
    res = encouraging_loss_parts(logits, target, BonusSpec(**opts), reduction="sum", impl=impl, want_stats=True)
    loss, nll, bonus = el_reference(logits, target, **opts)
    torch.testing.assert_close(res.loss.double(), loss.sum().detach(), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(res.nll_loss.double(), nll.sum(), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(res.bonus_loss.double(), bonus.sum(), rtol=1e-6, atol=1e-5)
    # diagnostics against a direct computation
    valid = target != -100
    z = logits[valid].double()
    t = target[valid]
    p_t = torch.softmax(z, -1).gather(1, t[:, None]).squeeze(1)
    other = z.scatter(1, t[:, None], float("-inf")).max(1).values
    margin = z.gather(1, t[:, None]).squeeze(1) - other
    expect = [valid.sum(), p_t.sum(), (p_t > 0.5).sum(), margin.sum(), (z.argmax(1) == t).sum()]
    assert res.stats._fields == STAT_NAMES
    torch.testing.assert_close(res.stats.vector(), torch.tensor([float(e) for e in expect], dtype=torch.float64),
                               rtol=1e-5, atol=1e-4)


def test_a_tie_with_the_target_counts_as_wrong(impl):
    """n_correct counts the rows whose target logit is above every other; a
    tie at the top is not one of them (its margin is 0)."""
    z = torch.zeros(3, 8)
    z[0, 2], z[0, 5] = 4.0, 4.0  # target 2 tied with 5 at the top
    z[1, 3], z[1, 1] = 4.0, 1.5  # target 3 ahead by 2.5
    z[2, 6], z[2, 0] = 1.0, 3.0  # target 6 behind by 2
    target = torch.tensor([2, 3, 6])
    st = encouraging_loss_parts(z, target, BonusSpec(label_smoothing=0.1), impl=impl, want_stats=True).stats
    assert st.n_correct.item() == 1
    assert st.sum_margin.item() == pytest.approx(0.0 + 2.5 - 2.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_parts_are_float32_and_stats_only_when_asked(impl, dtype):
    """Loss, NLL and bonus come back in float32 for float32 and half inputs,
    whatever precision the implementation computes in, only the loss
    differentiable; no diagnostics unless asked for."""
    logits, target = make_inputs((9, 40), dtype, 3)
    res = encouraging_loss_parts(logits, target, BonusSpec(label_smoothing=0.1), impl=impl)
    assert [x.dtype for x in (res.loss, res.nll_loss, res.bonus_loss)] == [torch.float32] * 3
    assert res.stats is None
    x = logits.clone().requires_grad_(True)
    res = encouraging_loss_parts(x, target, BonusSpec(label_smoothing=0.1), impl=impl)
    # the loss carries the gradient; its NLL and bonus parts are for the log only
    assert res.loss.requires_grad and not res.nll_loss.requires_grad and not res.bonus_loss.requires_grad
    stats = encouraging_loss_parts(x, target, BonusSpec(label_smoothing=0.1), impl=impl, want_stats=True).stats
    assert not any(v.requires_grad for v in stats)


def test_ignore_index_other_than_the_default(impl):
    """fairseq's padding index (1) is a valid class id: its rows are left out
    of the loss, the other rows of class 1 are not (against the reference)."""
    logits, target = make_inputs((12, 30), torch.float32, 7)
    target = torch.where(target == -100, 1, target)
    target[::3] = 1
    x = logits.clone().requires_grad_(True)
    res = encouraging_loss_parts(x, target, BonusSpec(label_smoothing=0.1), ignore_index=1, reduction="sum", impl=impl)
    res.loss.backward()
    xr = logits.double().requires_grad_(True)
    ref = el_reference(xr, target, label_smoothing=0.1, ignore_index=1)[0].sum()
    ref.backward()
    torch.testing.assert_close(res.loss.double(), ref.detach(), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(x.grad.double(), xr.grad, rtol=1e-5, atol=1e-6)
    assert float(x.grad[target == 1].abs().max()) == 0.0
    with torch.no_grad():  # the path without autograd
        loss = encouraging_loss_parts(logits, target, BonusSpec(label_smoothing=0.1), ignore_index=1,
                                      reduction="sum", impl=impl).loss
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-6, atol=1e-5)


def test_nll_of_confident_tokens_to_relative_precision(impl):
    """Tokens the model is sure of (p_t = 1 - 1e-6 ... 1 - 1e-9): their NLL,
    about 1 - p_t, to 1e-4 relative in fp32, not to the rounding of the
    log-normaliser (about 1e-7 absolute)."""
    V = 50
    lead = torch.tensor([18.0, 21.0, 24.0, 25.0])  # target logit above V - 1 zeros
    z = torch.zeros(4, V)
    target = torch.tensor([1, 7, 20, 49])
    z[torch.arange(4), target] = lead
    nll = encouraging_loss_parts(z, target, BonusSpec(label_smoothing=0.1), reduction="none", impl=impl).nll_loss
    expect = el_reference(z, target, label_smoothing=0.1)[1]
    torch.testing.assert_close(nll.double(), expect, rtol=1e-4, atol=0.0)


@pytest.mark.parametrize("shape", [(64, 5), (3, 2)], ids=["rows-over-classes", "two-classes"])
def test_more_rows_than_classes(impl, shape):
    """Few classes and many rows (a chunk holds more rows than there are
    classes): loss and gradient against the reference."""
    logits, target = make_inputs(shape, torch.float32, 23)
    x = logits.clone().requires_grad_(True)
    loss = encouraging_loss(x, target, impl=impl, label_smoothing=0.1)
    loss.backward()
    xr = logits.double().requires_grad_(True)
    ref = reduce(el_reference(xr, target, label_smoothing=0.1)[0], target, "mean")
    ref.backward()
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x.grad.double(), xr.grad, rtol=1e-5, atol=1e-6)


def test_non_contiguous_logits(impl):
    """Logits as a transposed view (a model's [V, N] output read as [N, V]):
    loss and gradient against the reference."""
    logits, target = make_inputs((20, 33), torch.float32, 29)
    x = logits.t().contiguous().requires_grad_(True)  # [V, N]
    loss = encouraging_loss(x.t(), target, impl=impl, label_smoothing=0.1, reduction="sum")
    loss.backward()
    xr = logits.double().requires_grad_(True)
    ref = el_reference(xr, target, label_smoothing=0.1)[0].sum()
    ref.backward()
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(x.grad.t().double(), xr.grad, rtol=1e-5, atol=1e-6)


def test_bonus_weight_zero_is_label_smoothed_ce(impl):
    """ρ = 0 (or --bonus none) is fairseq's label-smoothed CE; ε = 0 is plain CE."""
    logits, target = make_inputs((11, 50), torch.float32, 5)
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=-100)
    for kw in (dict(bonus_weight=0.0), dict(bonus="none")):
        got = encouraging_loss(logits, target, impl=impl, **kw)
        torch.testing.assert_close(got, ce, rtol=1e-6, atol=1e-6)


def test_all_ignored_is_zero_not_nan(impl):
    logits = torch.randn(4, 10, requires_grad=True)
    target = torch.full((4,), -100)
    for red in ("mean", "sum"):
        loss = encouraging_loss(logits, target, impl=impl, reduction=red, label_smoothing=0.1)
        loss.backward()
        assert loss.item() == 0.0
        assert torch.equal(logits.grad, torch.zeros_like(logits))
        logits.grad = None


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
def test_no_grad_forward_matches(impl, opts):
    """Validation runs the forward alone (the chunked path then skips D = p·B'):
    per-token losses equal the forward of a gradient-taking call and the
    float64 reference, with confidently right and confidently wrong rows."""
    logits, target = make_inputs((9, 30), torch.float32, 7)
    logits[4, (int(target[4]) + 1) % 30] = 14.0  # a wrong argmax at p > 1/2
    with torch.no_grad():
        a = encouraging_loss(logits, target, impl=impl, reduction="none", **opts)
    b = encouraging_loss(logits.clone().requires_grad_(), target, impl=impl, reduction="none", **opts)
    torch.testing.assert_close(a, b.detach(), rtol=1e-6, atol=1e-6)
    ref = el_reference(logits, target, **opts)[0]
    torch.testing.assert_close(a.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", impls.FUSED)
@pytest.mark.parametrize("sync_free", [False, True])  # gradient formed in forward, or from the row state in backward
def test_inplace_backward_matches(impl, sync_free):
    """inplace_backward=True: the same gradient, written over the logits'
    memory; without it the logits are left as they were."""
    logits, target = make_inputs((8, 64), torch.float32, 11)
    spec = BonusSpec(label_smoothing=0.1, log_end=0.75)
    a = logits.clone().requires_grad_()
    encouraging_loss_parts(a, target, spec, impl=impl, sync_free=sync_free).loss.backward()
    assert a.grad.data_ptr() != a.data_ptr()
    torch.testing.assert_close(a.detach(), logits)
    b = logits.clone().requires_grad_()
    encouraging_loss_parts(b, target, spec, impl=impl, sync_free=sync_free, inplace_backward=True).loss.backward()
    torch.testing.assert_close(b.grad, a.grad)
    assert b.grad.data_ptr() == b.data_ptr()
    c = logits.clone()
    with torch.no_grad():  # no gradient wanted: nothing is written over the logits
        encouraging_loss_parts(c, target, spec, impl=impl, sync_free=sync_free, inplace_backward=True)
    torch.testing.assert_close(c, logits)


def test_core_imports_no_fairseq():
    import subprocess
    import sys

    code = "import sys, wce_fairseq.functional, wce_fairseq.modules; assert 'fairseq' not in sys.modules, 'fairseq imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_ignored_positions_contribute_exactly_nothing(impl, dtype, reduction):
    """NaN, +inf or -inf in an ignored row leaves the loss and every gradient
    entry as if the row held zeros; that row's gradient is exactly 0 (where
    F.cross_entropy's is NaN)."""
    logits, target = make_inputs((9, 40), dtype, 13)
    target[[2, 5, 7]] = -100
    hostile = logits.clone()
    hostile[2, 3], hostile[5, :] = float("nan"), float("inf")
    hostile[7, ::2] = float("-inf")
    clean = logits.clone()
    clean[[2, 5, 7]] = 0.0
    opts = dict(label_smoothing=0.1, log_end=0.75, reduction=reduction, impl=impl)
    results = []
    for z in (hostile, clean):
        x = z.clone().requires_grad_(True)
        out = encouraging_loss(x, target, **opts)
        out.sum().backward()
        results.append((out.detach(), x.grad))
    (got, g_got), (want, g_want) = results
    assert torch.isfinite(got).all() and torch.isfinite(g_got).all()
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(g_got, g_want, rtol=0, atol=0)
    assert torch.equal(g_got[[2, 5, 7]], torch.zeros_like(g_got[[2, 5, 7]]))


def test_minus_infinity_logit_is_finite_without_smoothing(impl):
    """A class with logit −inf has p = 0: without label smoothing nothing
    weighs its log p, so the loss and gradient stay finite (as F.cross_entropy)."""
    logits, target = make_inputs((6, 20), torch.float32, 17, ignore=False)
    logits[:, 3] = float("-inf")
    target[target == 3] = 4
    x = logits.clone().requires_grad_(True)
    out = encouraging_loss(x, target, impl=impl, log_end=0.75)
    out.backward()
    xr = logits.double().requires_grad_(True)
    ref = el_reference(xr, target, log_end=0.75)[0].mean()
    ref.backward()
    torch.testing.assert_close(out.double(), ref.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x.grad.double(), xr.grad, rtol=1e-5, atol=1e-6)
    assert float(x.grad[:, 3].abs().max()) == 0.0


def test_double_backward(impl):
    """A second derivative through the loss: the reference (autograd over the
    formula) gives the float64 reference's Hessian-vector product; the
    analytic implementations refuse it with one clear error, when it is taken."""
    logits, target = make_inputs((5, 12), torch.float32, 19)
    v = torch.randn(5, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x = logits.double().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(encouraging_loss(x, target, impl=impl, label_smoothing=0.1, log_end=0.75), x,
                               create_graph=True)
    xr = logits.double().clone().requires_grad_(True)
    ref = reduce(el_reference(xr, target, label_smoothing=0.1, log_end=0.75)[0], target, "mean")
    (gr,) = torch.autograd.grad(ref, xr, create_graph=True)
    torch.testing.assert_close(g.detach(), gr.detach(), rtol=1e-5, atol=1e-7)  # the first derivative, graph kept
    if impl != "reference":
        with pytest.raises(RuntimeError, match=f"the {_concrete(impl)} encouraging loss has an analytic first "
                                               "derivative only: a second derivative"):
            torch.autograd.grad((g * v).sum(), x)
        return
    (hv,) = torch.autograd.grad((g * v).sum(), x)
    (hv_ref,) = torch.autograd.grad((gr * v).sum(), xr)
    torch.testing.assert_close(hv, hv_ref, rtol=1e-9, atol=1e-12)


def _concrete(impl):
    from wce_fairseq.functional import resolve_impl

    return resolve_impl(impl, "cpu")


def test_one_token_shapes(impl):
    """A single token as 1-D logits with a 0-d target, and a [B, 1, V] batch of
    one-token sequences: the reference's values."""
    logits, target = make_inputs((4, 50), torch.float32, 31)
    target = torch.where(target == -100, 0, target)
    ref = el_reference(logits, target, label_smoothing=0.1)[0]
    one = encouraging_loss(logits[2], target[2], impl=impl, label_smoothing=0.1, reduction="sum")
    torch.testing.assert_close(one.double(), ref[2], rtol=1e-6, atol=1e-6)
    seqs = encouraging_loss(logits[:, None], target[:, None], impl=impl, label_smoothing=0.1, reduction="none")
    torch.testing.assert_close(seqs.double(), ref[:, None], rtol=1e-6, atol=1e-6)


def test_a_bad_id_in_a_one_token_batch_is_refused(impl):
    with pytest.raises(IndexError, match="class id 50"):
        encouraging_loss(torch.zeros(1, 50), torch.tensor([50]), impl=impl)
