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


def allow_fairseq_checkpoints() -> None:
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add(list(FAIRSEQ_CHECKPOINT_GLOBALS))
