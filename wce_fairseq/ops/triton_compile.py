"""Compile the Triton kernels for real GPUs without one, through Triton's own
API, and read what the hardware would spend on them.

The arguments are bound by Triton's own launcher code for the chosen target,
so the compiled variant is the one a launch with the same arguments on that
GPU would compile (the same constexprs, the same 16-byte divisibility and
alignment specialisation). ``ptxas`` (shipped inside the triton wheel) reports
registers and spills; ``cuobjdump -res-usage`` beside it reads the cubin.

Compiling needs the kernels as real JIT functions, which they are not in a
process running the CPU interpreter (``TRITON_INTERPRET=1``, as the tests
do): :func:`compile_jobs` therefore compiles in worker processes without it.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import List, NamedTuple, Optional


class CompileReport(NamedTuple):
    arch: int
    registers: int
    spill_stores: int  # bytes
    spill_loads: int  # bytes
    stack: int  # bytes of stack frame
    local: int  # bytes of local memory
    shared: int  # bytes of static shared memory
    num_warps: int
    seconds: float
    ptx: str


def cuda_backend_available() -> Optional[str]:
    """None when this Triton can compile for NVIDIA GPUs offline, else why not."""
    try:
        import triton  # noqa: F401
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import make_backend

        make_backend(GPUTarget("cuda", 80, 32))
    except Exception as e:  # no triton, or a Triton without its CUDA backend
        return f"{type(e).__name__}: {e}"
    if not _has_compile_interface():
        return (f"Triton {triton.__version__} lacks the compiler interface this check drives "
                "(triton.knobs and a three-argument binder, as in the pinned Triton 3.9)")
    if not os.path.exists(_tool("ptxas")):
        return "the triton wheel has no ptxas"
    return None


def _has_compile_interface() -> bool:
    import inspect

    import triton
    from triton.runtime import jit

    binder = getattr(jit, "create_function_from_signature", None)
    return (hasattr(triton, "knobs") and binder is not None
            and len(inspect.signature(binder).parameters) == 3)


def _tool(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def supported_archs() -> list:
    """The GPU generations this project checks, as far as this Triton's ptxas knows them."""
    archs = [75, 80, 86, 89, 90]
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        get_ptxas(100)
        archs.append(100)
    except Exception:
        pass
    return archs


def _bind(kernel, backend, kwargs):
    """Triton's own argument binding (what ``kernel[grid](**kwargs)`` does before compiling)."""
    from triton.runtime.jit import create_function_from_signature

    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(**kwargs)
    return kernel._pack_args(backend, kwargs, bound, specialization, options)


def compile_for(kernel, arch: int, kwargs: dict) -> CompileReport:
    """Compile ``kernel`` with launch keyword arguments ``kwargs`` (tensors,
    scalars, constexprs, ``num_warps``, compile options) for sm_``arch``."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    options, signature, constexprs, attrs = _bind(kernel, backend, dict(kwargs))
    log = io.StringIO()
    t0 = time.perf_counter()
    knob = triton.knobs.nvidia
    old = knob.dump_ptxas_log
    knob.dump_ptxas_log = True
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target,
                                      options=options.__dict__)
    finally:
        knob.dump_ptxas_log = old
    seconds = time.perf_counter() - t0
    text = log.getvalue()
    usage = _res_usage(compiled.asm["cubin"])
    stores = sum(int(x) for x in re.findall(r"(\d+) bytes spill stores", text))
    loads = sum(int(x) for x in re.findall(r"(\d+) bytes spill loads", text))
    regs = re.findall(r"Used (\d+) registers", text)
    return CompileReport(arch, int(regs[-1]) if regs else usage["REG"], stores, loads, usage["STACK"],
                         usage["LOCAL"], usage["SHARED"], options.num_warps, seconds, compiled.asm["ptx"])


def _res_usage(cubin: bytes) -> dict:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        out = subprocess.run([_tool("cuobjdump"), "-res-usage", path], capture_output=True, text=True,
                             check=True).stdout
    line = [x for x in out.splitlines() if "REG:" in x][-1]
    return {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", line)}


# -- what the launcher can launch ----------------------------------------------------
class Variant(NamedTuple):
    """One combination of the kernels' constexprs, with options that produce it."""

    name: str
    options: dict  # BonusSpec fields


def variants() -> list:
    """Every (BONUS, LAM_POS) pair the criterion, the functional API and the
    fused projection can launch; the first is the paper's setting."""
    shapes = {"log": dict(log_end=0.5), "log_clamped": dict(log_end=1.0), "power": dict(bonus="power", bonus_gamma=0.5),
              "cos": dict(bonus="cos")}
    out = []
    for name, opts in shapes.items():
        out.append(Variant(f"{name}+bonus_smoothing", dict(label_smoothing=0.1, **opts)))
        out.append(Variant(name, dict(label_smoothing=0.1, bonus_smoothing=0.0, **opts)))
    out.append(Variant("no_bonus", dict(label_smoothing=0.1, bonus_weight=0.0)))
    return out


def launch_kwargs(kind: str, variant: Variant, dtype, V: int = 32000, config=None) -> dict:
    """The keyword arguments of a real launch of ``kind`` on a GPU (small CPU
    tensors stand in for the buffers: only their dtypes and alignment matter)."""
    import torch

    from .bonus import BonusSpec
    from .common import RowState, grad_scale, prepare_targets
    from .triton_config import COMPILE_OPTIONS, launch_config
    from .triton_el import backward_args, forward_args

    N = 4
    spec = BonusSpec(**variant.options)
    z = torch.empty(N, V, dtype=dtype)
    targets = prepare_targets(torch.zeros(N, dtype=torch.long), V, 1)
    rows = RowState.empty(N, "cpu")
    if kind == "forward":
        outs = [torch.empty(N) for _ in range(5)] + [torch.empty(N, dtype=torch.int8)]
        args = forward_args(z, targets, spec, outs, rows)
    else:
        args = backward_args(z, torch.empty_like(z), targets, spec, rows, grad_scale(targets, "mean"))
    cfg = config or launch_config(kind, V, dtype, torch.device("cuda"))
    return dict(args, BLOCK=cfg.block, num_warps=cfg.num_warps, **COMPILE_OPTIONS)


def problems(kind: str, report: CompileReport) -> list:
    """What the compile check refuses: spills, local memory, registers above the budget."""
    from .triton_config import REGISTER_BUDGET

    out = []
    if report.spill_stores or report.spill_loads:
        out.append(f"spills {report.spill_stores} B stored / {report.spill_loads} B loaded")
    if report.local:
        out.append(f"{report.local} B of local memory")
    if report.registers > REGISTER_BUDGET[kind]:
        out.append(f"{report.registers} registers > the budget of {REGISTER_BUDGET[kind]}")
    return out


# -- batches of compiles in worker processes ---------------------------------------------
class Job(NamedTuple):
    """One compile: ``kind`` is "forward"/"backward", or "FILE.py:NAME" for a
    kernel of a file (taking ``x_ptr`` and ``BLOCK``)."""

    kind: str
    variant: str
    dtype: str  # "float32", "bfloat16", "float16"
    V: int
    block: int
    num_warps: int
    arch: int


def run_job(job: Job) -> dict:
    """Compile one job in this process; the report, or the error."""
    import torch

    from .triton_config import LaunchConfig

    out = dict(job._asdict())
    try:
        dtype = getattr(torch, job.dtype)
        if ":" in job.kind:
            path, name = job.kind.rsplit(":", 1)
            spec = importlib.util.spec_from_file_location("_wce_compile_target", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            report = compile_for(getattr(module, name), job.arch,
                                 dict(x_ptr=torch.empty(16, dtype=dtype), BLOCK=job.block, num_warps=job.num_warps))
            found = []
        else:
            from .triton_el import KERNELS

            variant = {v.name: v for v in variants()}[job.variant]
            kwargs = launch_kwargs(job.kind, variant, dtype, job.V, LaunchConfig(job.block, job.num_warps))
            report = compile_for(KERNELS[job.kind], job.arch, kwargs)
            found = problems(job.kind, report)
        out.update({k: v for k, v in report._asdict().items() if k != "ptx"}, problems=found, error=None)
    except Exception as e:  # a compile error is a result too
        out.update(error=f"{type(e).__name__}: {str(e).strip()[:2000]}", problems=["does not compile"])
    return out


def compile_jobs(jobs: List[Job], workers: int = 2) -> List[dict]:
    """Compile ``jobs`` in ``workers`` processes (without the CPU interpreter);
    results in the order of ``jobs``."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    shares = [jobs[i::workers] for i in range(workers)]
    results = []
    # a cache of this call's own (removed afterwards) unless the caller names one
    with tempfile.TemporaryDirectory(prefix="wce_triton_cache_") as cache:
        env.setdefault("TRITON_CACHE_DIR", cache)
        procs = [subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env) for share in shares if share]
        for proc, share in zip(procs, shares):
            out, err = proc.communicate(json.dumps([list(j) for j in share]))
            if proc.returncode != 0:
                raise RuntimeError(f"the compile worker failed ({proc.returncode}):\n{err[-3000:]}")
            results.append(json.loads(out))
    ordered = []
    for i in range(len(jobs)):
        ordered.append(results[i % workers][i // workers])
    return ordered


def _main() -> None:
    jobs = [Job(*j) for j in json.load(sys.stdin)]
    with contextlib.redirect_stdout(sys.stderr):  # Triton's own messages
        results = [run_job(j) for j in jobs]
    print(json.dumps(results))


if __name__ == "__main__":
    _main()
