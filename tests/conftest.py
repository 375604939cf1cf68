import os
import sys

# Without a GPU, run Triton kernels through its CPU interpreter. This must be
# set before triton is first imported.
try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover
    pass

sys.path.insert(0, os.path.dirname(__file__))
