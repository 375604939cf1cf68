"""Load fairseq checkpoints under torch >= 2.6 without turning safe loading off.

``torch.load`` defaults to ``weights_only=True`` since torch 2.6; fairseq's checkpoints hold
a few plain Python objects that the safe unpickler refuses. We allow exactly
those (found by saving real checkpoints with this plugin; see the tests), and
nothing else.
"""
from __future__ import annotations

import argparse
import importlib
import warnings

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
    names = [np.ndarray, np.dtype]
    # numpy 2 pickles numpy._core.multiarray, numpy 1 numpy.core.multiarray
    # (numpy 1.26 has a numpy._core without it; numpy 2 warns on numpy.core)
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = importlib.import_module(mod)
        except ImportError:
            continue
        names += [getattr(m, n) for n in ("_reconstruct", "scalar") if hasattr(m, n)]
    for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.float16, np.float32, np.float64):
        names.append(type(np.dtype(t)))  # numpy >= 1.25 pickles a dtype by its class
    # a numpy scalar's bytes pickle through _codecs.encode (torch >= 2.5 allows it itself)
    import _codecs

    names.append(_codecs.encode)
    unique = []
    for n in names:
        if all(n is not u for u in unique):
            unique.append(n)
    return unique


def allow_fairseq_checkpoints() -> None:
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add(list(FAIRSEQ_CHECKPOINT_GLOBALS) + _numpy_globals())
