"""The Triton kernels compiled for real GPUs, offline, through Triton's own API
(no GPU needed): every variant the launcher can pick compiles, without
spills or local memory, within the register budget that gives >= 50 %
occupancy (ops/triton_config.py). The full matrix on sm_80 and sm_90, the
paper's variant on the other generations."""
import os

import pytest

from wce_fairseq.ops.triton_compile import cuda_backend_available

WHY_NOT = cuda_backend_available()
needs_compiler = pytest.mark.skipif(WHY_NOT is not None, reason=f"no offline CUDA compiler in this Triton: {WHY_NOT}")

from wce_fairseq.ops.triton_compile import Job, compile_jobs, supported_archs, variants  # noqa: E402
from wce_fairseq.ops.triton_config import AUTOTUNE_CANDIDATES, GPU_CONFIG, KINDS, LaunchConfig, occupancy  # noqa: E402

DTYPES = ["float32", "bfloat16", "float16"]
VARIANTS = [v.name for v in variants()]
PAPER = VARIANTS[0]  # log bonus with bonus smoothing
ARCHS = supported_archs() if WHY_NOT is None else [90]


def _job(kind, variant, dtype, arch, V=32000, cfg=None, path_kernel=None):
    cfg = cfg or GPU_CONFIG.get(kind, LaunchConfig(16, 1))
    return Job(path_kernel or kind, variant, dtype, V, cfg.block, cfg.num_warps, arch)


MATRIX = [_job(k, v, d, a) for a in (80, 90) for k in KINDS for v in VARIANTS for d in DTYPES]
MATRIX += [_job(k, PAPER, d, a) for a in ARCHS if a not in (80, 90) for k in KINDS for d in DTYPES]
OTHER_V = [_job(k, PAPER, "bfloat16", 90, V) for k in KINDS for V in (32001, 50257, 256000)]
AUTOTUNE = [_job(k, PAPER, "bfloat16", 90, cfg=c) for k in KINDS for c in AUTOTUNE_CANDIDATES[k]]
SPILLING = _job("forward", PAPER, "float32", 90, cfg=LaunchConfig(16384, 4))
BROKEN = _job("broken", PAPER, "float32", 90, cfg=LaunchConfig(16, 1),
              path_kernel=os.path.join(os.path.dirname(os.path.dirname(__file__)), "helpers", "triton_broken.py") + ":broken")


@pytest.fixture(scope="module")
def compiled():
    """Everything below, compiled once, two processes at a time."""
    jobs = MATRIX + OTHER_V + AUTOTUNE + [SPILLING, BROKEN]
    return dict(zip(jobs, compile_jobs(jobs, workers=2)))


def _ok(result):
    assert result["error"] is None, result["error"]
    assert result["problems"] == [], result
    warps, share = occupancy(result["arch"], result["registers"], result["num_warps"])
    assert share >= 0.5, (result, warps)


@needs_compiler
@pytest.mark.parametrize("job", MATRIX, ids=lambda j: f"sm{j.arch}-{j.kind}-{j.variant}-{j.dtype}")
def test_kernel_compiles_within_budget(compiled, job):
    _ok(compiled[job])


@needs_compiler
@pytest.mark.parametrize("job", OTHER_V, ids=lambda j: f"{j.kind}-V{j.V}")
def test_other_vocabulary_sizes_compile(compiled, job):
    """Triton specialises on the 16-divisibility of V and of the row stride:
    those variants too (V = 32001, GPT-2's 50257, a 256k vocabulary)."""
    _ok(compiled[job])


@needs_compiler
@pytest.mark.parametrize("job", AUTOTUNE, ids=lambda j: f"{j.kind}-{j.block}x{j.num_warps}")
def test_autotune_candidates_compile_without_spills(compiled, job):
    r = compiled[job]
    assert r["error"] is None and r["spill_stores"] == 0 and r["local"] == 0, r


def test_pinned_triton_runs_the_check():
    """The test environment's Triton compiles offline, so the checks above run in CI."""
    triton = pytest.importorskip("triton")

    pinned = _pinned_triton()
    if triton.__version__ != pinned:
        pytest.skip(f"Triton {triton.__version__} is not the pinned {pinned}")
    assert WHY_NOT is None


def _pinned_triton():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "requirements-test.txt")) as f:
        return next(line.split("==")[1].strip() for line in f if line.startswith("triton=="))


def test_autotune_starts_from_the_offline_choice():
    for kind in KINDS:
        assert AUTOTUNE_CANDIDATES[kind][0] == GPU_CONFIG[kind]


@needs_compiler
def test_check_refuses_a_spilling_kernel(compiled):
    """The check can fail: a 16384-wide tile on 4 warps (128 fp32 elements a
    thread) does not fit the registers."""
    found = compiled[SPILLING]["problems"]
    assert any("spills" in p for p in found), found


@needs_compiler
def test_check_refuses_a_kernel_that_does_not_compile(compiled):
    r = compiled[BROKEN]
    assert r["error"] is not None and r["problems"] == ["does not compile"], r


def test_occupancy_model():
    # 64 registers x 8 warps: 4 blocks, 32 of an H100's 64 warps; 128 registers: 2 blocks
    assert occupancy(90, 64, 8) == (32, 0.5)
    assert occupancy(90, 128, 8) == (16, 0.25)
    assert occupancy(86, 60, 8) == (32, 32 / 48)  # rounded up to 64 registers a thread
    assert occupancy(75, 30, 8) == (32, 1.0)  # the architecture's maximum
