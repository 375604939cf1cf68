"""Plain-PyTorch API of the encouraging loss (docs/design.md §4). Imports no fairseq.

    >>> from wce_fairseq.functional import encouraging_loss
    >>> loss = encouraging_loss(logits, target, label_smoothing=0.1, log_end=0.5)

``logits`` is ``[..., V]`` of any float dtype (the math runs in fp32, the
returned loss is fp32 — fp64 for fp64 input with ``impl="reference"``);
``target`` is ``[...]`` of class ids, ``ignore_index`` entries contribute
nothing. ``reduction="mean"`` divides by the number of non-ignored tokens and
returns 0 (not NaN) when there are none.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from typing import Dict, Optional, Tuple

import torch

from .ops.bonus import BonusSpec, ELConfigError
from .ops.chunked import chunked_forward
from .ops.common import STAT_NAMES, ELResult, check_inputs
from .ops.reference import reference_forward

__all__ = ["encouraging_loss", "encouraging_loss_parts", "IMPLEMENTATIONS", "STAT_NAMES", "resolve_impl",
           "runnable_impls", "self_check"]

logger = logging.getLogger(__name__)


def _triton_interpreted() -> bool:
    """True when Triton kernels run on the CPU: ``TRITON_INTERPRET=1`` *and* a
    Triton that has the CPU interpreter (older ones, e.g. the 2.0 that torch
    2.0 brings, have none and would look for a GPU driver instead)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return False
    try:
        return importlib.util.find_spec("triton.runtime.interpreter") is not None
    except ImportError:
        return False


def _triton_runnable() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available() or _triton_interpreted()


_HAS_TRITON = _triton_runnable()

#: Every ``impl`` that can run on this machine.
IMPLEMENTATIONS = ("auto", "reference", "chunked") + (("triton",) if _HAS_TRITON else ())


def resolve_impl(impl: str, device: torch.device | str | None = None) -> str:
    """The concrete implementation for ``impl`` on ``device``; raises a clear
    error for an unknown name or one this machine cannot run.

    With a device, the Triton kernel is first run once there on a small batch
    against the float64 reference (:func:`self_check`, cached): ``auto`` falls
    back to ``chunked`` with one warning where it fails, a forced ``triton``
    raises the reason."""
    known = ("auto", "reference", "chunked", "triton")
    if impl not in known:
        raise ELConfigError(f"--el-impl (impl) must be one of {known}; got {impl!r}")
    if impl not in IMPLEMENTATIONS:
        raise ELConfigError(
            f"--el-impl (impl) {impl!r} cannot run on this machine: it needs the triton package and a CUDA "
            f"device (or TRITON_INTERPRET=1 with a Triton that has the CPU interpreter, for testing); "
            f"available here: {IMPLEMENTATIONS}"
        )
    dev = torch.device(device) if device is not None else None
    if impl == "auto":
        if dev is None or _auto_candidate(dev) != "triton":
            return "chunked"
        reason = self_check("triton", dev)
        if reason is None:
            return "triton"
        if (str(dev), reason) not in _WARNED:
            _WARNED.add((str(dev), reason))
            logger.warning("encouraging loss: the Triton kernel failed its self-check on %s (%s); "
                           "using the chunked implementation instead", dev, reason)
        return "chunked"
    if impl == "triton" and dev is not None:
        if dev.type != "cuda" and not _triton_interpreted():
            raise ELConfigError(f"--el-impl (impl) 'triton' needs CUDA tensors (or TRITON_INTERPRET=1); the "
                                f"loss runs on {dev}")
        reason = self_check("triton", dev)
        if reason is not None:
            raise ELConfigError(f"--el-impl (impl) 'triton' failed its self-check on {dev}: {reason}. "
                                "Use --el-impl auto or chunked.")
    return impl


def _auto_candidate(dev: torch.device) -> str:
    """The fastest exact implementation for a device, before its self-check."""
    return "triton" if (_HAS_TRITON and dev.type == "cuda") else "chunked"


_CHECKED: Dict[Tuple[str, str], Optional[str]] = {}
_WARNED: set = set()


def _check_problem(device: torch.device):
    """A small batch that exercises what can go wrong in a kernel: several
    column blocks, confident right and wrong rows (the tangent and the exact
    1 - p paths), a padding row, smoothing on both terms."""
    g = torch.Generator().manual_seed(1234)
    N, V = 9, (5000 if device.type == "cuda" else 1100)
    z = torch.randn(N, V, generator=g, dtype=torch.float64) * 3.0
    t = torch.randint(0, V, (N,), generator=g)
    z[0, t[0]] += 25.0  # p_t -> 1
    z[1, t[1]] += 4.0
    z[2, (int(t[2]) + 7) % V] += 25.0  # confidently wrong
    z[3, V - 1] += 30.0  # argmax in the last block
    t[4] = -100  # padding
    spec = BonusSpec(label_smoothing=0.1, log_end=0.75, bonus_weight=1.5)
    return z.float().to(device), t.to(device), spec


def _compare_with_reference(impl: str, device: torch.device) -> Optional[str]:
    """fp32 logits with a unit upstream gradient (the gradient written during
    the forward pass), then fp16 logits under a loss scale of 2^10 with
    ``reduction="mean"`` (the gradient written in backward, upstream folded
    in): both code paths a run can take, each against the reference."""
    z, t, spec = _check_problem(device)
    for dtype, reduction, upstream, tol in ((torch.float32, "sum", 1.0, 1e-5), (torch.float16, "mean", 1024.0, 2e-3)):
        zin = z.to(dtype)
        x = zin.clone().requires_grad_(True)
        got = _dispatch(impl, x, t, spec, -100, reduction, True)
        got.loss.backward(torch.tensor(upstream, device=device))
        xr = zin.double().cpu().requires_grad_(True)
        ref = reference_forward(xr, t.cpu(), spec, -100, reduction, True)
        (ref.loss * upstream).backward()
        pairs = (("loss", got.loss, ref.loss), ("nll", got.nll_loss, ref.nll_loss),
                 ("bonus", got.bonus_loss, ref.bonus_loss), ("stats", got.stats, ref.stats))
        for name, a, b in pairs:
            a, b = a.detach().double().cpu(), b.detach().double()
            if not torch.allclose(a, b, rtol=1e-4, atol=1e-4):
                return f"{name} ({dtype}) differs from the float64 reference ({a.tolist()} vs {b.tolist()})"
        g, gr = x.grad.double().cpu(), xr.grad
        err = float((g - gr).abs().max())
        if not (x.grad.dtype == dtype and err <= tol * max(1.0, float(gr.abs().max()))):
            return f"gradient ({dtype}, upstream {upstream:g}) differs from the float64 reference by {err:.3g}"
    return None


def self_check(impl: str, device: torch.device | str = "cpu") -> Optional[str]:
    """Run ``impl`` once on a small batch on ``device`` (forward, backward,
    diagnostics) against the float64 reference. ``None`` when it agrees, else
    the reason (a compile or launch error, or the first mismatch). Cached per
    implementation and device."""
    dev = torch.device(device)
    key = (impl, str(dev))
    if key not in _CHECKED:
        try:
            with torch.enable_grad():  # callers may be inside no_grad (validation): the check needs a backward
                reason = _compare_with_reference(impl, dev)
        except Exception as e:  # compile, launch, or a missing device: all mean "cannot run here"
            reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        _CHECKED[key] = reason
    return _CHECKED[key]


def runnable_impls(device: torch.device | str = "cpu") -> Tuple[str, ...]:
    """The implementations that run correctly on ``device`` here: Triton only
    when it passes :func:`self_check` there."""
    base = ("auto", "reference", "chunked")
    if _HAS_TRITON and self_check("triton", device) is None:
        return base + ("triton",)
    return base


def _dispatch(name, logits, target, spec, ignore_index, reduction, want_stats, **impl_options) -> ELResult:
    if name == "reference":
        return reference_forward(logits, target, spec, ignore_index, reduction, want_stats)
    if name == "chunked":
        return chunked_forward(logits, target, spec, ignore_index, reduction, want_stats, **impl_options)
    from .ops.triton_el import triton_forward

    return triton_forward(logits, target, spec, ignore_index, reduction, want_stats, **impl_options)


def encouraging_loss_parts(
    logits: torch.Tensor,
    target: torch.Tensor,
    spec: BonusSpec,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    impl: str = "auto",
    want_stats: bool = False,
    **impl_options,
) -> ELResult:
    """Loss, nll, weighted bonus and (optionally) diagnostics, for callers such
    as the fairseq criterion that need more than the loss."""
    check_inputs(logits, target, reduction, ignore_index)
    name = resolve_impl(impl, logits.device)
    return _dispatch(name, logits, target, spec, ignore_index, reduction, want_stats, **impl_options)


def encouraging_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    log_end: float = 0.5,
    bonus: str = "log",
    bonus_weight: float = 1.0,
    bonus_gamma: float | None = None,
    bonus_start: float = 0.0,
    bonus_smoothing: float | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    impl: str = "auto",
) -> torch.Tensor:
    """The encouraging loss of docs/design.md §2:
    ``Σ_v q_v (−log p_v) + ρ Σ_v q'_v B(p_v)`` per non-ignored token."""
    spec = BonusSpec(
        label_smoothing=label_smoothing,
        log_end=log_end,
        bonus=bonus,
        bonus_weight=bonus_weight,
        bonus_gamma=bonus_gamma,
        bonus_start=bonus_start,
        bonus_smoothing=bonus_smoothing,
    )
    return encouraging_loss_parts(
        logits, target, spec, ignore_index=ignore_index, reduction=reduction, impl=impl
    ).loss
