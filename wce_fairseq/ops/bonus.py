"""Bonus shapes, their derivatives and option validation (docs/design.md, "The loss" and "Options and schedules").

Everything here is plain PyTorch and imports no fairseq.

Notation used across ``ops/``: for a token with log-probabilities ``lp`` and
probabilities ``p = exp(lp)``, a bonus shape supplies

* ``B(p)``          the bonus value (≤ 0), and
* ``D(p) = p·B'(p)`` the derivative already multiplied by ``p``.

Working with ``D`` instead of ``B'`` keeps the power bonus finite at ``p = 0``
(``B' = -γ p^(γ-1)`` is infinite there for γ < 1, while ``p·B'`` is 0), and it
is exactly what the logit gradient needs:

    ∂/∂z_j Σ_v q'_v B(p_v) = q'_j D(p_j) - p_j · S,   S = Σ_v q'_v D(p_v).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

BONUS_SHAPES = ("log", "power", "cos", "none")
REDUCTIONS = ("mean", "sum", "none")
# LE = 1 means "no conservative tangent": the authors clamp 1 - p at this value.
LOG_CLAMP = 1e-5
DEFAULT_LOG_END = 0.5


class ELConfigError(ValueError):
    """A bad encouraging-loss option; the message names the flag and the range."""


def _fail(name: str, flag: str, allowed: str, got) -> None:
    raise ELConfigError(f"{flag} ({name}) must be {allowed}; got {got!r}")


@dataclass(frozen=True)
class BonusSpec:
    """Validated options of the loss itself (schedules live in ``schedule.py``)."""

    label_smoothing: float = 0.0
    log_end: float = DEFAULT_LOG_END
    bonus: str = "log"
    bonus_weight: float = 1.0
    bonus_gamma: Optional[float] = None
    bonus_start: float = 0.0
    bonus_smoothing: Optional[float] = None

    def __post_init__(self):
        eps = self.label_smoothing
        if not _is_real(eps) or not (0.0 <= eps < 1.0):
            _fail("label_smoothing", "--label-smoothing", "in [0, 1)", eps)
        if self.bonus not in BONUS_SHAPES:
            _fail("bonus", "--bonus", f"one of {BONUS_SHAPES}", self.bonus)
        le = self.log_end
        if not _is_real(le) or not (0.0 < le <= 1.0):
            _fail("log_end", "--log-end", "in (0, 1]", le)
        rho = self.bonus_weight
        if not _is_real(rho) or not (0.0 <= rho < math.inf):
            _fail("bonus_weight", "--bonus-weight", "a finite number >= 0", rho)
        s = self.bonus_start
        if not _is_real(s) or not (0.0 <= s < 1.0):
            _fail("bonus_start", "--bonus-start", "in [0, 1)", s)
        lam = self.bonus_smoothing
        if lam is not None and (not _is_real(lam) or not (0.0 <= lam < 1.0)):
            _fail("bonus_smoothing", "--bonus-smoothing", "in [0, 1) (or unset: same as --label-smoothing)", lam)
        g = self.bonus_gamma
        if self.bonus == "power":
            if g is None or not _is_real(g) or not (0.0 < g < math.inf):
                _fail("bonus_gamma", "--bonus-gamma", "a finite number > 0 with --bonus power", g)
        self._refuse_options_without_effect()

    def _refuse_options_without_effect(self) -> None:
        """An option that only acts together with another is refused without
        it: a value the user set and the loss would silently ignore."""
        if self.bonus_gamma is not None and self.bonus != "power":
            _unused("--bonus-gamma", f"--bonus {self.bonus}", "applies only with --bonus power")
        if self.log_end != DEFAULT_LOG_END and self.bonus != "log":
            _unused("--log-end", f"--bonus {self.bonus}", "applies only with --bonus log")
        if self.bonus == "none":
            for flag, value, default in (("--bonus-weight", self.bonus_weight, 1.0),
                                         ("--bonus-start", self.bonus_start, 0.0),
                                         ("--bonus-smoothing", self.bonus_smoothing, None)):
                if value != default:
                    _unused(flag, "--bonus none", "applies only with a bonus (--bonus log, power or cos)")

    # -- derived ---------------------------------------------------------------
    @property
    def smoothing_b(self) -> float:
        """λ, the smoothing of the bonus target (defaults to ε)."""
        return self.label_smoothing if self.bonus_smoothing is None else self.bonus_smoothing

    @property
    def active(self) -> bool:
        return self.bonus != "none" and self.bonus_weight > 0.0

    def with_weight(self, weight: float) -> "BonusSpec":
        return BonusSpec(**{**self.__dict__, "bonus_weight": float(weight)})

    # -- the curve ---------------------------------------------------------------
    def raw(self, p: torch.Tensor, one_minus_p: torch.Tensor, lp=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Unshifted ``(B(p), D(p))`` elementwise; ``one_minus_p`` is ``1 - p``
        computed accurately by the caller (``-expm1(lp)`` near p = 1). With
        ``lp = log p`` given, the power bonus is formed as ``exp(γ lp)``, whose
        autograd derivative stays finite where p underflows to 0."""
        if self.bonus == "log":
            le = self.log_end
            if le >= 1.0:
                # log(max(1-p, 1e-5)); derivative 0 inside the clamp.
                omp = one_minus_p.clamp_min(LOG_CLAMP)
                b = torch.log(omp)
                d = torch.where(one_minus_p > LOG_CLAMP, -p / omp, torch.zeros_like(p))
                return b, d
            # Conservative log: log(1-p) up to p = LE, then its tangent line
            #   B = log(1-min(p,LE)) - relu(p-LE)/(1-LE),  p·B' = -p/(1-min(p,LE)).
            pc = p.clamp_max(le)
            b = torch.log1p(-pc) - (p - le).clamp_min(0.0) * (1.0 / (1.0 - le))
            d = -p / (1.0 - pc)
            return b, d
        if self.bonus == "power":
            g = float(self.bonus_gamma)
            pg = p.pow(g) if lp is None else torch.exp(g * lp)
            return -pg, -g * pg  # B = -p^γ, p·B' = -γ p^γ
        if self.bonus == "cos":
            # cos(πp) − 1 written as −2 sin²(πp/2): no cancellation at small p
            return -2.0 * torch.sin((0.5 * math.pi) * p).square(), -math.pi * p * torch.sin(math.pi * p)
        z = torch.zeros_like(p)
        return z, z

    def raw_at(self, x: float) -> float:
        """Unshifted B at a scalar point, in Python floats (used for the start shift)."""
        if self.bonus == "log":
            if self.log_end >= 1.0:
                return math.log(max(1.0 - x, LOG_CLAMP))
            le = self.log_end
            return math.log1p(-x) if x <= le else math.log1p(-le) - (x - le) / (1.0 - le)
        if self.bonus == "power":
            return -(x ** float(self.bonus_gamma))
        if self.bonus == "cos":
            return math.cos(math.pi * x) - 1.0
        return 0.0

    def curve(self, p: torch.Tensor, one_minus_p: torch.Tensor, lp=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(B_s(p), D_s(p))`` with the bonus start ``s`` applied to the whole
        curve: 0 below ``s``, ``B(p) - B(s)`` from ``s`` on (continuous at s)."""
        b, d = self.raw(p, one_minus_p, lp)
        s = self.bonus_start
        if s > 0.0:
            keep = p >= s
            b = torch.where(keep, b - self.raw_at(s), torch.zeros_like(b))
            d = torch.where(keep, d, torch.zeros_like(d))
        return b, d


def _unused(flag: str, given: str, rule: str) -> None:
    name = flag.lstrip("-").replace("-", "_")
    raise ELConfigError(f"{flag} ({name}) {rule}; got {given}, where it would have no effect. Drop {flag} or "
                        "change the option it depends on.")


def _is_real(x) -> bool:
    # x == x is False for NaN only (written so, it also reads a size-generic float in a compiled graph)
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x
