"""ops/dispatch.py and ops/self_check.py: which implementation runs, and the
start-up self-check against its own float64 computation, with its fallback."""
import logging

import pytest
import torch

from tests.helpers import impls
from wce_fairseq import functional as F
from wce_fairseq.ops import dispatch as D
from wce_fairseq.ops.bonus import ELConfigError


@pytest.mark.parametrize("impl", impls.CONCRETE)
def test_self_check_passes_for_every_impl(impl):
    assert F.self_check(impl, "cpu") is None


@pytest.mark.parametrize("impl", impls.CONCRETE)
@pytest.mark.parametrize("wrong", ["loss x 1.01", "gradient x 1.01", "margin + 0.01"])
def test_self_check_catches_a_wrong_implementation(monkeypatch, impl, wrong):
    """The check is against its own float64 computation, not the package's
    reference: a 1 % error in any implementation, the reference included,
    fails it (the loss scaled also scales the gradient)."""
    from wce_fairseq.ops.common import Diagnostics
    from wce_fairseq.ops.self_check import compare_with_reference

    def run(x, t, spec, reduction):
        res = D.run_impl(impl, x, t, spec, -100, reduction, True)
        if wrong == "loss x 1.01":
            return res._replace(loss=res.loss * 1.01)
        if wrong == "gradient x 1.01":
            return res._replace(loss=_GradScaled.apply(res.loss))
        return res._replace(stats=Diagnostics(*(res.stats[:3]), res.stats[3] + 0.01, res.stats[4]))

    reason = compare_with_reference(run, torch.device("cpu"))
    assert reason is not None and reason.startswith(("loss", "gradient", "stats"))


class _GradScaled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * 1.01


def test_triton_runs_and_passes_its_self_check_with_the_pinned_triton():
    """Where the test environment's Triton is installed, the Triton
    implementation must run (on a GPU, or the CPU interpreter) and agree with
    the float64 check: a broken kernel fails here, and every Triton test
    runs (tests/helpers/impls.py)."""
    if not impls.IS_PINNED_TRITON:
        pytest.skip(f"Triton {impls.INSTALLED_TRITON} is not the pinned {impls.PINNED_TRITON}")
    assert "triton" in F.IMPLEMENTATIONS
    assert F.self_check("triton", "cuda" if torch.cuda.is_available() else "cpu") is None


@pytest.fixture
def fresh_checks(monkeypatch):
    monkeypatch.setattr(D, "_CHECKED", {})
    monkeypatch.setattr(D, "_WARNED", set())
    monkeypatch.setattr(D, "_HAS_TRITON", True)
    monkeypatch.setattr(D, "IMPLEMENTATIONS", ("auto", "reference", "chunked", "triton"))


def _inject(monkeypatch, mode):
    """Make the Triton path fail as a broken device would: raise at launch, or return a wrong gradient."""
    real = D.run_impl

    def fake(name, logits, *args, **kw):
        if name != "triton":
            return real(name, logits, *args, **kw)
        if mode == "launch":
            raise RuntimeError("CUDA error: no kernel image is available for execution on the device")
        out = real("chunked", logits, *args, **kw)
        return out._replace(loss=out.loss * 1.01)  # scales the gradient too: a wrong kernel

    monkeypatch.setattr(D, "run_impl", fake)


@pytest.mark.parametrize("mode", ["launch", "mismatch"])
def test_auto_falls_back_to_chunked_with_one_warning(fresh_checks, monkeypatch, caplog, mode):
    _inject(monkeypatch, mode)
    # the device the check runs on is the CPU here; "auto" considers Triton only on CUDA
    monkeypatch.setattr(D, "_auto_candidate", lambda dev: "triton")
    with caplog.at_level(logging.WARNING, logger=D.logger.name):
        names = [D.resolve_impl("auto", "cpu") for _ in range(3)]
    assert names == ["chunked"] * 3
    warnings = [r for r in caplog.records if "self-check" in r.getMessage()]
    assert len(warnings) == 1 and "chunked" in warnings[0].getMessage()
    want = "CUDA error" if mode == "launch" else "differs from the float64 check"
    assert want in warnings[0].getMessage()
    # and the loss computed under "auto" is the correct one
    logits, target = torch.randn(5, 11), torch.tensor([1, 2, 3, 4, -100])
    torch.testing.assert_close(F.encouraging_loss(logits, target, impl="auto"),
                               F.encouraging_loss(logits, target, impl="reference").float())


@pytest.mark.parametrize("mode", ["launch", "mismatch"])
def test_forced_triton_fails_with_the_reason(fresh_checks, monkeypatch, mode):
    _inject(monkeypatch, mode)
    monkeypatch.setattr(D, "_triton_interpreted", lambda: True)
    with pytest.raises(ELConfigError, match="'triton' failed its self-check on cpu"):
        D.resolve_impl("triton", "cpu")


def test_criterion_checks_its_implementation_at_start_up(fresh_checks, monkeypatch, caplog):
    """fairseq builds the criterion before the first batch: a forced implementation
    that fails its self-check on the run's device stops the run there, and the log
    names the implementation that runs."""
    pytest.importorskip("fairseq")
    from tests.helpers.fairseq_objects import make_criterion, make_task

    task = make_task()
    _inject(monkeypatch, "launch")
    monkeypatch.setattr(D, "_triton_interpreted", lambda: True)
    with pytest.raises(ELConfigError, match="'triton' failed its self-check on cpu: RuntimeError: CUDA error"):
        make_criterion(task, el_impl="triton")
    with caplog.at_level(logging.INFO):
        crit = make_criterion(task, el_impl="auto")
    assert crit.impl == "auto"
    assert any("loss implementation chunked (--el-impl auto) on cpu" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("impl", impls.CONCRETE)
def test_self_check_inside_no_grad(monkeypatch, impl):
    """A first call from validation (under no_grad) must not mistake the
    missing autograd for a broken implementation."""
    monkeypatch.setattr(D, "_CHECKED", {})
    with torch.no_grad():
        assert F.self_check(impl, "cpu") is None
        assert not torch.is_grad_enabled()
