"""The implementations the tests run, as pytest parameters. The matrix never
shrinks: an implementation that cannot run here is still a parameter, and
its tests are skipped with the reason (shown by ``pytest -ra``).

Triton is the one that may be missing (no package, no GPU and no CPU
interpreter, or a Triton whose interpreter cannot run the kernels, as torch
2.4's Triton 3.0). With the Triton the test environment pins
(requirements-test.txt) it is never skipped: a kernel that fails its
start-up self-check there fails the tests, it does not leave them.

The ``impl`` fixture (conftest.py) takes every one of ``ALL``; a test that
needs fewer parametrizes ``impl`` with one of the other lists."""
import importlib.metadata
import os
import re
from typing import Optional

import pytest

from wce_fairseq.functional import IMPLEMENTATIONS, self_check

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _pinned_triton() -> Optional[str]:
    with open(os.path.join(REPO, "requirements-test.txt"), encoding="utf-8") as f:
        m = re.search(r"^triton==(\S+)", f.read(), re.M)
    return m.group(1) if m else None


def _installed_triton() -> Optional[str]:
    try:
        return importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return None


PINNED_TRITON, INSTALLED_TRITON = _pinned_triton(), _installed_triton()
IS_PINNED_TRITON = INSTALLED_TRITON is not None and INSTALLED_TRITON == PINNED_TRITON


def triton_unavailable() -> Optional[str]:
    """Why the Triton implementation cannot run here, or None. With the
    pinned Triton nothing excuses it."""
    if IS_PINNED_TRITON:
        return None
    if "triton" not in IMPLEMENTATIONS:
        return (f"Triton {INSTALLED_TRITON or '(not installed)'}: no CUDA device and no CPU interpreter that can "
                "run the kernels")
    reason = self_check("triton", "cuda" if _cuda() else "cpu")
    if reason is not None:
        return f"Triton {INSTALLED_TRITON} (the tests pin {PINNED_TRITON}) fails the start-up self-check here: {reason}"
    return None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _param(name):
    why = triton_unavailable() if name == "triton" else None
    return pytest.param(name, marks=pytest.mark.skip(reason=f"impl=triton: {why}")) if why else name


CONCRETE = [_param(n) for n in ("reference", "chunked", "triton")]
ALL = CONCRETE + ["auto"]
FUSED = [_param(n) for n in ("chunked", "triton")]  # the analytic-gradient kernels
