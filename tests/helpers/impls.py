"""The implementations the tests run: those that run correctly here (Triton
where it passes its self-check: CUDA, or a CPU interpreter that can run it).
The ``impl`` fixture (conftest.py) takes every one of ``ALL``; a test that
needs fewer parametrizes ``impl`` with one of the other lists."""
from wce_fairseq.functional import runnable_impls

RUNNABLE = runnable_impls()
CONCRETE = [i for i in RUNNABLE if i != "auto"]  # reference, chunked (, triton)
ALL = CONCRETE + ["auto"]
FUSED = [i for i in CONCRETE if i in ("chunked", "triton")]  # the analytic-gradient kernels
