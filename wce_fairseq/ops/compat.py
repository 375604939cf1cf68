"""The PyTorch features the loss uses that older releases lack, in one place.

The plugin runs on torch 1.12 (upstream fairseq 0.12.2's) up to the pinned
release. ``torch.compiler`` arrived in 2.1–2.3, ``torch.library.custom_op`` in
2.4, ``triton_op``/``wrap_triton`` in 2.6, autocast queries by device type in
2.4. Where one is missing the loss runs as it would in eager mode, which is
what such a torch does anyway."""
from __future__ import annotations

from typing import Callable, Optional, TypeVar

import torch

F = TypeVar("F", bound=Callable)
_compiler = getattr(torch, "compiler", None)

#: Whether the loss can be registered as ``torch.library`` operators
#: (ops/library.py), which keep it whole inside compiled graphs.
HAS_LOSS_OPERATORS = all(hasattr(torch.library, name) for name in ("custom_op", "triton_op", "wrap_triton"))


def is_compiling() -> bool:
    """True while Dynamo traces the caller (never on a torch without it)."""
    check = getattr(_compiler, "is_compiling", None)
    return bool(check is not None and check())


def assume_constant_result(fn: F) -> F:
    """``torch.compiler.assume_constant_result`` where it exists."""
    decorate = getattr(_compiler, "assume_constant_result", None)
    return decorate(fn) if decorate is not None else fn


def compiler_disable(fn: F) -> F:
    """``torch.compiler.disable`` where it exists: ``fn`` runs eagerly inside a
    compiled model."""
    decorate = getattr(_compiler, "disable", None)
    return decorate(fn) if decorate is not None else fn


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast gives matmuls on ``device_type``, None when it is off."""
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    if device_type == "cuda":
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
    if device_type == "cpu":
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return None
