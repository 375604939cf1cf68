"""Launch configuration of the Triton kernels, from a written model
(docs/design.md, "GPU launch configuration", has the measured tables;
``python -m wce_fairseq.tools.triton_report`` prints them).

The model. One program per token row streams the row in tiles of ``BLOCK``
columns; each of its ``32 · num_warps`` threads holds ``E = BLOCK / (32 ·
num_warps)`` consecutive elements of a tile. The kernels do a few flops per
byte, so their speed is memory bandwidth, which needs bytes in flight on
every SM: (resident threads) × E × (bytes per element). Registers decide how
many threads are resident: an SM holds 65,536 32-bit registers, allocated per
warp in steps of 256 (8 per thread), and at most ``MAX_WARPS[arch]`` warps.

* Forward holds, per element of a tile, the loaded value and its
  exponential; its running sums are scalars, each tile reduced across the
  block. At E = 4 the paper's variant compiles to 47–58 registers (sm_75–
  sm_100; every variant within 64), so 32–40 warps stay resident: 50–62 % of
  an A100/H100/B200, 67–83 % of an sm_86/89, 100 % of an sm_75. E = 8 (a
  2048-wide tile on 8 warps) takes 64–77 registers and spills on some
  targets: 25–37 % on an H100. E = 4 it is: 16-byte loads for fp32, 8-byte
  for bf16/fp16 (10 KiB of bf16 in flight per H100 SM, below what saturates
  its bandwidth: the reason ``WCE_TRITON_AUTOTUNE`` offers wider tiles).
* Backward keeps no sums: at E = 8 the paper's variant needs 30–52
  registers, 75–100 % occupancy (100 % in bf16/fp16 everywhere), with
  16-byte loads for bf16/fp16 (32 KiB per SM).

Neither depends on V beyond the number of tiles, ``ceil(V / BLOCK)`` (the
masked lanes of the last one load nothing), nor on the dtype: one
configuration per kernel on every GPU. ``REGISTER_BUDGET`` is what the offline
compile check (tests/ops/test_triton_compile.py) holds every variant to, and
where the ≥ 50 % occupancy comes from. Under the CPU interpreter (tests) the
tile is at most 1024 wide and shrinks with V, since numpy runs every lane.

``WCE_TRITON_AUTOTUNE=1`` times ``AUTOTUNE_CANDIDATES`` (the offline choice
first) on the device at the first call per V and dtype and keeps the
fastest.
"""
from __future__ import annotations

import math
import os
from typing import Dict, NamedTuple

# Triton 3.9 defaults to FMA contraction and warns that 3.10 will not: the
# kernels' rounding is fixed here, for every compile, to what the CPU
# interpreter (which the precision tests run) computes: no contraction.
COMPILE_OPTIONS = dict(enable_fp_fusion=False)

KINDS = ("forward", "backward")
REGISTERS_PER_SM = 65536
REGISTER_STEP = 8  # per thread (256 per warp)
MAX_WARPS = {75: 32, 80: 64, 86: 48, 89: 48, 90: 64, 100: 64}
MAX_BLOCKS = {75: 16, 80: 32, 86: 16, 89: 24, 90: 32, 100: 32}
# registers per thread every compiled variant must stay within: 64 leaves 32
# warps resident, >= 50 % of every architecture's maximum
REGISTER_BUDGET = {"forward": 64, "backward": 64}


class LaunchConfig(NamedTuple):
    block: int
    num_warps: int

    def elements_per_thread(self) -> int:
        return self.block // (32 * self.num_warps)


GPU_CONFIG: Dict[str, LaunchConfig] = {"forward": LaunchConfig(1024, 8), "backward": LaunchConfig(2048, 8)}
AUTOTUNE_CANDIDATES: Dict[str, tuple] = {
    "forward": (GPU_CONFIG["forward"], LaunchConfig(2048, 16), LaunchConfig(2048, 8)),
    "backward": (GPU_CONFIG["backward"], LaunchConfig(4096, 16), LaunchConfig(4096, 8)),
}
INTERPRETER_MAX_BLOCK = 1024


def launch_config(kind: str, V: int, dtype=None, device=None) -> LaunchConfig:
    """(BLOCK, num_warps) for a kernel launch over rows of V logits."""
    on_gpu = device is not None and getattr(device, "type", str(device)) == "cuda"
    if on_gpu:
        return GPU_CONFIG[kind]
    return LaunchConfig(min(1 << max(int(V) - 1, 1).bit_length(), INTERPRETER_MAX_BLOCK), 4)


def autotune_enabled() -> bool:
    return os.environ.get("WCE_TRITON_AUTOTUNE") == "1"


def occupancy(arch: int, registers: int, num_warps: int):
    """(resident warps per SM, share of the architecture's maximum)."""
    per_thread = max(REGISTER_STEP, math.ceil(registers / REGISTER_STEP) * REGISTER_STEP)
    by_registers = REGISTERS_PER_SM // (per_thread * 32 * num_warps)
    blocks = min(by_registers, MAX_BLOCKS[arch], MAX_WARPS[arch] // num_warps)
    warps = blocks * num_warps
    return warps, warps / MAX_WARPS[arch]


def bytes_in_flight(arch: int, registers: int, cfg: LaunchConfig, element_size: int) -> int:
    """Bytes one tile load puts in flight per SM, with every resident block loading."""
    warps, _ = occupancy(arch, registers, cfg.num_warps)
    return warps * 32 * cfg.elements_per_thread() * element_size
