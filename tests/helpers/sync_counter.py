"""A counter of the calls that make the host wait for a device."""
import os
import sys

import torch

import wce_fairseq

PACKAGE = os.path.dirname(os.path.abspath(wce_fairseq.__file__)) + os.sep  # the package's own files only


class SyncCounter:
    """Counts the calls from the package's own code that make the host wait
    for a device's result (read a value, or size an output by its data)."""

    # Python-level entry points only: syncs inside torch's C++ (boolean-mask
    # indexing, say) are invisible here; benchmarks/gpu_check.py runs the loss
    # under torch.cuda.set_sync_debug_mode("error") on a GPU for those. (Patching
    # __getitem__ or __index__ on torch.Tensor would leave CPython's sequence
    # slots changed after the undo.)
    METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "nonzero", "cpu", "masked_select")

    def __init__(self, monkeypatch):
        self.calls = []
        for name in self.METHODS:
            self._wrap(monkeypatch, torch.Tensor, name)
        for name in ("nonzero", "masked_select", "unique"):
            self._wrap(monkeypatch, torch, name)

    def _wrap(self, monkeypatch, owner, name):
        orig = getattr(owner, name)
        calls = self.calls

        def wrapped(*a, **k):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(PACKAGE):
                calls.append(f"{name} at {os.path.relpath(caller, PACKAGE)}:{sys._getframe(1).f_lineno}")
            return orig(*a, **k)

        monkeypatch.setattr(owner, name, wrapped)
