"""What every implementation shares: the result types, input checks, the
target preamble, reduction and the diagnostics."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .bonus import REDUCTIONS, ELConfigError

# Input dtypes whose gradient is formed in backward, in fp32 with the upstream
# gradient folded in, then cast once (docs/design.md, "Mixed precision").
LOW_PRECISION = (torch.float16, torch.bfloat16)


class Diagnostics(NamedTuple):
    """What the paper argues EL improves, summed over the non-ignored tokens
    (0-d float64 tensors, so that they add up across batches and workers)."""

    n_tokens: torch.Tensor
    sum_target_prob: torch.Tensor
    n_well_classified: torch.Tensor  # tokens with p_target > 0.5
    sum_margin: torch.Tensor  # target logit minus the best other logit
    n_correct: torch.Tensor  # target logit above every other (a tie counts as wrong)

    def vector(self) -> torch.Tensor:
        return torch.stack(tuple(self))


STAT_NAMES = Diagnostics._fields


class ELResult(NamedTuple):
    """What every implementation returns. ``loss`` is differentiable;
    ``nll_loss`` (−log p_target) and ``bonus_loss`` (ρ Σ q' B, already
    weighted) are detached and reduced like ``loss``."""

    loss: torch.Tensor
    nll_loss: torch.Tensor
    bonus_loss: torch.Tensor
    stats: Optional[Diagnostics]


class Weights(NamedTuple):
    """The numbers the loss is made of, for a vocabulary of V classes: label
    smoothing ε (ε_i = ε/(V−1) per other class), bonus smoothing λ (λ_i) and
    the bonus weight ρ; λ and ρ are 0 where the bonus is inactive."""

    V: int
    eps: float
    eps_i: float
    lam: float
    lam_i: float
    rho: float
    active: bool


def weights(spec, V: int) -> Weights:
    active = spec.active
    lam = spec.smoothing_b if active else 0.0
    eps = spec.label_smoothing
    return Weights(V, eps, eps / (V - 1), lam, lam / (V - 1), spec.bonus_weight if active else 0.0, active)


class RowState(NamedTuple):
    """What the gradient of a row needs, saved by forward (docs/design.md,
    "The gradient"): with p = exp(z − row_max)·inv_sum, the row's gradient is
    p·coef + ρλ_i·D(p) − ε_i, except at ``argmax_col`` (``grad_argmax``) and at
    the target (``grad_target``), all times the row's scale."""

    row_max: torch.Tensor
    inv_sum: torch.Tensor
    coef: torch.Tensor
    grad_target: torch.Tensor
    grad_argmax: torch.Tensor
    argmax_col: torch.Tensor  # int64; the target's column where no exact argmax entry is needed

    @classmethod
    def empty(cls, n: int, device) -> "RowState":
        f = [torch.empty(n, dtype=torch.float32, device=device) for _ in range(5)]
        return cls(*f, torch.empty(n, dtype=torch.int64, device=device))

    def store(self, c0: int, c1: int, rows: "RowState") -> None:
        for dst, src in zip(self, rows):
            dst[c0:c1] = src

    def slice(self, c0: int, c1: int) -> "RowState":
        return RowState(*(x[c0:c1] for x in self))


class KernelForward(NamedTuple):
    """What an implementation's forward returns: per-token loss parts (fp32,
    0 on ignored rows), diagnostics, the row state for backward and, where it
    was formed at once, the gradient."""

    loss: torch.Tensor
    nll: torch.Tensor
    bonus: torch.Tensor
    stats: Optional[Diagnostics]
    rows: Optional[RowState]
    grad: Optional[torch.Tensor]


class Targets(NamedTuple):
    """The preamble of every implementation, computed once per call."""

    safe: torch.Tensor  # int64 class ids; ignored and out-of-range entries replaced by 0
    valid: torch.Tensor  # bool: not ignore_index (and in range)
    n_valid: torch.Tensor  # int64, 0-d, on the device (never read by the host)

    def slice(self, c0: int, c1: int) -> "Targets":
        """Rows c0..c1; ``n_valid`` stays the whole call's (the mean's denominator)."""
        return Targets(self.safe[c0:c1], self.valid[c0:c1], self.n_valid)


def prepare_targets(target: torch.Tensor, V: int, ignore_index: int) -> Targets:
    # an out-of-range id is reported by ops/targets.py; meanwhile it counts as padding
    valid = (target != ignore_index) & (target >= 0) & (target < V)
    safe = torch.where(valid, target, torch.zeros_like(target)).long()
    return Targets(safe, valid, valid.sum())


def grad_scale(targets: Targets, reduction: str) -> torch.Tensor:
    """The factor of each row's gradient before the upstream gradient: 1 (sum,
    none) or 1 / max(n_valid, 1) (mean), and 0 on ignored rows (fp32)."""
    rows = targets.valid.to(torch.float32)
    if reduction == "mean":
        rows = rows / targets.n_valid.clamp_min(1).to(torch.float32)
    return rows


def upstream_rows(g_loss: torch.Tensor, n: int) -> torch.Tensor:
    """The upstream gradient as one fp32 factor per row."""
    g = g_loss.detach().to(torch.float32).reshape(-1)
    return g.expand(n) if g.numel() == 1 else g


def check_inputs(logits: torch.Tensor, target: torch.Tensor, reduction: str) -> None:
    """What can be checked without looking at the values (the target ids'
    range is ops/targets.py's)."""
    if reduction not in REDUCTIONS:
        raise ELConfigError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
    if logits.dim() < 1:
        raise ValueError("logits must have a class dimension")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point; got {logits.dtype}")
    if logits.size(-1) < 2:
        raise ValueError(f"the vocabulary (last dimension of logits) must have at least 2 classes; got {logits.size(-1)}")
    if target.shape != logits.shape[:-1]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)} minus the class dim")
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"target must be an integer tensor; got {target.dtype}")


def reduce_tokens(per_token: torch.Tensor, n_valid: torch.Tensor, reduction: str) -> torch.Tensor:
    """Sum / mean over tokens (ignored ones hold 0). An all-ignored batch has
    mean 0 (not 0/0), so it never produces a NaN."""
    if reduction == "none":
        return per_token
    total = per_token.sum()
    if reduction == "sum":
        return total
    return total / n_valid.clamp_min(1).to(total.dtype)


@torch.no_grad()
def diagnostics(valid: torch.Tensor, p_target: torch.Tensor, margin: torch.Tensor, correct: torch.Tensor) -> Diagnostics:
    """Sums over the valid rows of per-row target probability, margin and
    correctness (any float or bool dtype; ignored rows count for nothing,
    whatever their entries hold, NaN included)."""

    def total(x):
        return torch.where(valid, x.double(), 0.0).sum()

    return Diagnostics(valid.double().sum(), total(p_target), total(p_target > 0.5), total(margin), total(correct))


def add_diagnostics(a: Optional[Diagnostics], b: Diagnostics) -> Diagnostics:
    return b if a is None else Diagnostics(*(x + y for x, y in zip(a, b)))
