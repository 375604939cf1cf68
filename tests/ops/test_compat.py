"""ops/compat.py: the torch features the loss takes where they exist, and the
eager behaviour where they do not (the compatibility columns' torch 1.12)."""
import pytest
import torch

from wce_fairseq.ops import compat


def _version():
    return tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])


def test_the_loss_operators_exist_from_torch_2_6():
    assert compat.HAS_LOSS_OPERATORS == (_version() >= (2, 6))


def test_autocast_dtype_on_the_cpu():
    assert compat.autocast_dtype("cpu") is None
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the one CPU autocast dtype every torch has
        assert compat.autocast_dtype("cpu") == torch.bfloat16
        assert compat.autocast_dtype("cuda") is None
    assert compat.autocast_dtype("cpu") is None


def test_is_compiling_only_inside_a_compiled_function():
    assert compat.is_compiling() is False
    if not hasattr(torch, "compile"):
        pytest.skip(f"torch {torch.__version__} has no torch.compile")
    seen = []

    def f(x):
        seen.append(compat.is_compiling())
        return x + 1

    torch.compile(f, backend="eager", fullgraph=True)(torch.ones(2))
    assert seen == [True]


def test_the_decorators_keep_the_function():
    def f(x):
        return x * 2

    for decorate in (compat.assume_constant_result, compat.compiler_disable):
        assert decorate(f)(3) == 6
