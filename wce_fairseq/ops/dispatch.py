"""Which implementation runs: the names, what this machine can run, the
start-up self-check, and the call itself.

* ``reference`` — autograd over full probability vectors in float64 (ops/reference.py);
* ``chunked`` — pure PyTorch, analytic gradient (ops/chunked.py);
* ``triton`` — fused GPU kernels (ops/triton_el.py), where Triton can run;
* ``auto`` — ``triton`` on CUDA tensors where it passes its self-check, else ``chunked``.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from typing import Dict, Optional, Tuple

import torch

from .bonus import BonusSpec, ELConfigError
from .common import ELResult, check_inputs
from .compat import HAS_LOSS_OPERATORS, assume_constant_result, is_compiling
from .targets import check_target_range
from .function import ImplOptions, el_forward
from .reference import reference_forward
from .self_check import compare_with_reference

logger = logging.getLogger(__name__)

#: Every implementation name (what ``--el-impl`` and ``impl=`` accept).
IMPL_NAMES = ("auto", "reference", "chunked", "triton")


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

#: The implementations that can run on this machine.
IMPLEMENTATIONS = tuple(n for n in IMPL_NAMES if n != "triton" or _HAS_TRITON)

_CHECKED: Dict[Tuple[str, str], Optional[str]] = {}
_WARNED: set = set()


def kernel(name: str):
    """The kernel object behind a fused implementation."""
    if name == "chunked":
        from .chunked import ChunkedKernel

        return ChunkedKernel
    if name == "triton":
        from .triton_el import TritonKernel  # imported only where it can run

        return TritonKernel
    raise ValueError(name)


def resolve_impl(impl: str, device: torch.device | str | None = None) -> str:
    """The concrete implementation for ``impl`` on ``device``; raises a clear
    error for an unknown name or one this machine cannot run. With a device,
    Triton is first run there against a float64 check (cached): ``auto``
    falls back to ``chunked`` with one warning where it fails, a forced
    ``triton`` raises the reason."""
    if impl not in IMPL_NAMES:
        raise ELConfigError(f"--el-impl (impl) must be one of {IMPL_NAMES}; got {impl!r}")
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


def self_check(impl: str, device: torch.device | str = "cpu") -> Optional[str]:
    """Run ``impl`` once on a small batch on ``device`` (forward, backward,
    diagnostics) against a float64 computation of its own (ops/self_check.py): ``None`` when it agrees, else
    the reason (a compile or launch error, or the first mismatch). Cached per
    implementation and device."""
    dev = torch.device(device)
    key = (impl, str(dev))
    if key not in _CHECKED:

        def run(x, t, spec, reduction):
            return run_impl(impl, x, t, spec, -100, reduction, True)

        try:
            with torch.enable_grad():  # callers may be inside no_grad (validation): the check needs a backward
                reason = compare_with_reference(run, dev)
        except Exception as e:  # compile, launch, or a missing device: all mean "cannot run here"
            reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        _CHECKED[key] = reason
    return _CHECKED[key]


def runnable_impls(device: torch.device | str = "cpu") -> Tuple[str, ...]:
    """The implementations that run correctly on ``device`` here: Triton only
    where it passes :func:`self_check` there."""
    return tuple(n for n in IMPLEMENTATIONS if n != "triton" or self_check("triton", device) is None)


def run_impl(name: str, logits, target, spec: BonusSpec, ignore_index: int, reduction: str, want_stats: bool,
             options: ImplOptions = ImplOptions()) -> ELResult:
    """The loss through the concrete implementation ``name`` (no resolution):
    eagerly, or through its ``torch.library`` operators where a graph is
    being compiled (ops/library.py)."""
    if is_compiling() and HAS_LOSS_OPERATORS:
        from .library import graph_forward

        return graph_forward(name, logits, target, spec, ignore_index, reduction, want_stats, options)
    if name == "reference":
        return reference_forward(logits, target, spec, ignore_index, reduction, want_stats)
    return el_forward(kernel(name), logits, target, spec, ignore_index, reduction, want_stats, options)


@assume_constant_result
def _resolved_while_compiling(impl: str, device: torch.device) -> str:
    return resolve_impl(impl, device)


def compute(logits, target, spec: BonusSpec, *, ignore_index: int = -100, reduction: str = "mean",
            impl: str = "auto", want_stats: bool = False, **impl_options) -> ELResult:
    """Check the inputs, resolve ``impl`` for the logits' device, run it.
    While a graph is compiled, the implementation is chosen (and self-checked)
    once, when the graph is made, and the target ids are checked by an
    operator of the graph when it runs."""
    options = ImplOptions(**impl_options).for_tensor(logits)
    check_inputs(logits, target, reduction)
    if is_compiling():
        name = _resolved_while_compiling(impl, logits.device)
    else:
        name = resolve_impl(impl, logits.device)
        # the reference gathers with the ids themselves: its check cannot wait
        check_target_range(target, logits.size(-1), ignore_index,
                           deferred=bool(options.sync_free) and name != "reference")
    return run_impl(name, logits, target, spec, ignore_index, reduction, want_stats, options)
