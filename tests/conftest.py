import os

import pytest

# Without a GPU, run Triton kernels through its CPU interpreter. This must be
# set before triton is first imported.
try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(params=__import__("tests.helpers.impls", fromlist=["ALL"]).ALL)
def impl(request):
    """Every implementation, and auto; one that cannot run here is skipped with the reason (tests/helpers/impls.py)."""
    return request.param
