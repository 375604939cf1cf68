"""How a criterion learns fairseq's training progress, under any task.

fairseq's trainer calls three hooks on whatever task it runs:

* ``begin_epoch(epoch, model)`` at each epoch start (after a resume too),
* ``train_step(..., update_num)`` for each forward/backward, with the number
  of updates already applied,
* ``optimizer_step(..., update_num)`` once an update is applied.

:func:`follow_training_progress` wraps them on one task *instance*, so they
report to every listening criterion (its ``set_progress(epoch=...,
num_updates=...)``). The first ``begin_epoch`` also hands the model to each
listener's ``check_model``, before fairseq starts iterating over samples.

The progress is also written into the task's state, which fairseq saves in
every checkpoint (``task_state``) and gives back to the task when a tool
rebuilds it from a checkpoint (``fairseq-validate``): :func:`saved_progress`
reads it there, so such a tool scores at the schedule's value where training
left it. What ``t`` means is defined in docs/design.md ("Schedules").
"""
from __future__ import annotations

import inspect
import weakref
from typing import Optional, Tuple

HOOKS = ("begin_epoch", "train_step", "optimizer_step")
# key of the progress in the task's checkpointed state
STATE_KEY = "encouraging_ce_progress"


def follow_training_progress(task, listener) -> bool:
    """Make ``task`` report the epoch and the update count to ``listener``.
    Returns False, changing nothing, for an object without fairseq's hooks."""
    if not all(callable(getattr(task, name, None)) for name in HOOKS):
        return False
    listeners = task.__dict__.get("_el_progress_listeners")
    if listeners is None:
        listeners = task.__dict__["_el_progress_listeners"] = weakref.WeakSet()
        _wrap_hooks(task, listeners)
    listeners.add(listener)
    return True


def _wrap_hooks(task, listeners) -> None:
    checked = weakref.WeakSet()  # listeners that have seen the model

    def tell(**progress):
        for c in list(listeners):
            c.set_progress(**progress)
        _save(task, progress)

    def first_epoch(args):
        for c in list(listeners):
            if c not in checked and callable(getattr(c, "check_model", None)):
                c.check_model(args["model"])  # e.g. --el-fuse-projection on a model it cannot serve
                checked.add(c)
        tell(epoch=args["epoch"])

    _wrap(task, "begin_epoch", before=first_epoch)
    _wrap(task, "train_step", before=lambda a: tell(num_updates=a["update_num"]))
    # an applied update: validation and checkpoints that follow see it as done
    _wrap(task, "optimizer_step", after=lambda a: tell(num_updates=a["update_num"] + 1))


def _wrap(task, name, before=None, after=None) -> None:
    inner = getattr(task, name)
    sig = inspect.signature(inner)

    def hook(*args, **kwargs):
        arg = sig.bind(*args, **kwargs).arguments
        if before:
            before(arg)
        out = inner(*args, **kwargs)
        if after:
            after(arg)
        return out

    setattr(task, name, hook)


def _save(task, progress) -> None:
    state = getattr(task, "state", None)
    if state is None or not hasattr(state, "merge_state_dict"):
        return
    old = saved_progress(task) or (1, 0)
    epoch = int(progress.get("epoch", old[0]))
    num_updates = int(progress.get("num_updates", old[1]))
    # a new dict each time: fairseq's resume replaces the stored one
    state.merge_state_dict({STATE_KEY: {"epoch": epoch, "num_updates": num_updates}})


def saved_progress(task) -> Optional[Tuple[int, int]]:
    """``(epoch, num_updates)`` stored in the task's state, or None."""
    state = getattr(task, "state", None)
    stored = getattr(state, "state_dict", None)
    if not isinstance(stored, dict) or not isinstance(stored.get(STATE_KEY), dict):
        return None
    entry = stored[STATE_KEY]
    return int(entry.get("epoch", 1)), int(entry.get("num_updates", 0))
