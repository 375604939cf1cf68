"""Load fairseq checkpoints under torch >= 2.6 without turning safe loading off.

``torch.load`` now defaults to ``weights_only=True``; fairseq's checkpoints hold
a few plain Python objects that the safe unpickler refuses. We allow exactly
those (found by saving real checkpoints with this plugin; see the tests), and
nothing else.
"""
from __future__ import annotations

import argparse

import torch

FAIRSEQ_CHECKPOINT_GLOBALS = [argparse.Namespace]


def _numpy_globals():
    """What numeric numpy arrays and scalars pickle to. fairseq keeps its
    metrics in the checkpoint, and ``--eval-bleu`` logs its n-gram counts as
    int64 arrays: without these, resuming or decoding such a run fails."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - fairseq needs numpy
        return []
    core = getattr(np, "_core", None) or np.core
    names = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    scalar = getattr(core.multiarray, "scalar", None)
    if scalar is not None:
        names.append(scalar)
    for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.float16, np.float32, np.float64):
        names.append(type(np.dtype(t)))  # numpy >= 1.25 pickles a dtype by its class
    return names


def allow_fairseq_checkpoints() -> None:
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add(list(FAIRSEQ_CHECKPOINT_GLOBALS) + _numpy_globals())
