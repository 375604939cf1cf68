"""Implementations of the encouraging loss: ``reference`` (autograd over full
probabilities), ``chunked`` (pure PyTorch, analytic gradient) and ``triton``
(fused GPU kernel, imported only where it can run)."""
from .bonus import BONUS_SHAPES, BonusSpec, ELConfigError  # noqa: F401
