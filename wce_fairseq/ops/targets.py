"""Target ids outside ``[0, V)`` that are not ``ignore_index``: refused.

A kernel would read such an id's logit out of bounds, so every implementation
replaces it by 0 before use (``common.prepare_targets``) and reports it:

* on the CPU at once (an ``IndexError`` from the call itself);
* on a GPU without making the host wait for the device: the check runs on
  the device, its result is copied to pinned host memory behind a CUDA
  event, and the ``IndexError`` (naming the id and V) is raised by the first
  loss call, or :func:`raise_target_errors`, after the device has got there.
  fairseq reads its logging outputs after every step, so a bad batch fails
  at the latest one step later; its loss then counts the bad tokens as
  padding.
"""
from __future__ import annotations

from collections import deque

import torch

_PENDING: deque = deque()
# checks allowed in flight before the oldest is waited for (never reached when
# anything reads a result per step, as fairseq does)
_MAX_PENDING = 64


class _DeferredCheck:
    def __init__(self, target: torch.Tensor, bad: torch.Tensor, V: int, ignore_index: int):
        flat = target.reshape(-1)
        first_bad = flat[bad.reshape(-1).to(torch.uint8).argmax()]  # indexing by a tensor: no host read
        code = torch.stack([bad.any().long(), first_bad.long()])
        self.V, self.ignore_index = V, ignore_index
        if code.is_cuda:
            self.host = torch.empty(2, dtype=torch.long, pin_memory=True)
            self.host.copy_(code, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:  # the device code path forced on CPU tensors (tests): already computed
            self.host, self.event = code, None

    def done(self) -> bool:
        return self.event is None or self.event.query()

    def wait(self) -> None:
        if self.event is not None:
            self.event.synchronize()

    def error(self):
        found, first = self.host.numpy().tolist()  # a host buffer: no device read
        if found:
            return _error(first, self.V, self.ignore_index)
        return None


def _error(first, V, ignore_index) -> IndexError:
    return IndexError(f"target holds class id {first}, outside [0, {V}) and not ignore_index ({ignore_index})")


def raise_target_errors(wait: bool = False) -> None:
    """Raise the first failed deferred check whose result has arrived (with
    ``wait``: every pending one, waiting for the device)."""
    while _PENDING and (wait or _PENDING[0].done() or len(_PENDING) > _MAX_PENDING):
        check = _PENDING.popleft()
        check.wait()
        err = check.error()
        if err is not None:
            _PENDING.clear()
            raise err


def check_target_range(target: torch.Tensor, V: int, ignore_index: int, deferred: bool = False) -> None:
    raise_target_errors()
    if target.numel() == 0:
        return
    bad = ((target < 0) | (target >= V)) & (target != ignore_index)
    if deferred:
        _PENDING.append(_DeferredCheck(target, bad, V, ignore_index))
        return
    if bool(bad.any()):
        raise _error(target[bad][0].item(), V, ignore_index)
