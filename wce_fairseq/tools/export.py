"""Rewrite a checkpoint trained with the plugin to fairseq's stock names, so
that it loads, decodes and fine-tunes where the plugin is not installed.

    python -m wce_fairseq.tools.export ckpt/checkpoint_best.pt model.pt

``translation_encouraging`` becomes ``translation`` and ``encouraging_ce``
becomes ``label_smoothed_cross_entropy`` (keeping ``--label-smoothing``,
``--report-accuracy``, ``--ignore-prefix-size``); options fairseq does not know
are dropped, ``common.user_dir`` is cleared, and the optimizer history names
the stock criterion (so ``--restore-file`` needs no ``--reset-optimizer``).
The weights, the optimizer state and every other field are copied untouched.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile

import torch

STOCK_TASK = "translation"
STOCK_CRITERION = "label_smoothed_cross_entropy"
STOCK_CRITERION_CLASS = "LabelSmoothedCrossEntropyCriterion"
OUR_TASKS = ("translation_encouraging",)
OUR_CRITERIA = ("encouraging_ce",)


def _stock_fields():
    from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterionConfig
    from fairseq.tasks.translation import TranslationConfig

    def names(dc):
        return {f.name for f in dataclasses.fields(dc)} | {"_name"}

    return names(TranslationConfig), names(LabelSmoothedCrossEntropyCriterionConfig)


def _rewrite_section(section, ours, stock_name, keep):
    """A cfg section (dict or DictConfig) renamed to ``stock_name`` with only
    the ``keep`` fields; None where it is not one of ours."""
    if section is None or section.get("_name") not in ours:
        return None
    out = {k: v for k, v in dict(section).items() if k in keep}
    out["_name"] = stock_name
    return out


def _rewrite_namespace(ns, task_keep, crit_keep):
    """Legacy argparse.Namespace configs (``args``, or ``cfg.model`` of
    architectures registered the old way) carry the same names as attributes."""
    if ns is None or not hasattr(ns, "__dict__"):
        return
    if getattr(ns, "task", None) in OUR_TASKS:
        ns.task = STOCK_TASK
    if getattr(ns, "criterion", None) in OUR_CRITERIA:
        ns.criterion = STOCK_CRITERION
        for k in [k for k in vars(ns) if k.startswith(("bonus", "el_")) or k == "log_end"]:
            if k not in crit_keep and k not in task_keep:
                delattr(ns, k)
    if getattr(ns, "user_dir", None):
        ns.user_dir = None


def export_state(state: dict) -> dict:
    """The checkpoint ``state`` with stock task and criterion names (in place)."""
    task_keep, crit_keep = _stock_fields()
    cfg = state.get("cfg")
    if cfg is not None:
        task = _rewrite_section(cfg.get("task"), OUR_TASKS, STOCK_TASK, task_keep)
        if task is not None:
            cfg["task"] = task
        crit = _rewrite_section(cfg.get("criterion"), OUR_CRITERIA, STOCK_CRITERION, crit_keep)
        if crit is not None:
            cfg["criterion"] = crit
        if cfg.get("common") is not None and cfg["common"].get("user_dir"):
            cfg["common"]["user_dir"] = None
        _rewrite_namespace(cfg.get("model"), task_keep, crit_keep)
    _rewrite_namespace(state.get("args"), task_keep, crit_keep)
    for entry in state.get("optimizer_history") or []:
        if entry.get("criterion_name") == "EncouragingCrossEntropyCriterion":
            entry["criterion_name"] = STOCK_CRITERION_CLASS
    task_state = state.get("task_state")
    if isinstance(task_state, dict):
        from ..progress import STATE_KEY

        task_state.pop(STATE_KEY, None)
    return state


def load(path: str) -> dict:
    import wce_fairseq

    wce_fairseq.register()  # the classes fairseq checkpoints hold, for torch's safe loading
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13: no weights_only
        return torch.load(path, map_location="cpu")


def save_atomically(state: dict, out: str) -> None:
    """``torch.save`` to a temporary file beside the target's real path, then
    renamed over it: an interrupted write never leaves a partial file under
    the output name, and a link at ``out`` is written through, not replaced."""
    target = os.path.realpath(out)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(target) + ".", suffix=".tmp", dir=os.path.dirname(target))
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="a checkpoint written by fairseq-train with the plugin")
    ap.add_argument("out", help="where to write the exported checkpoint")
    a = ap.parse_args(argv)
    if os.path.exists(a.out) and os.path.samefile(a.checkpoint, a.out):
        ap.error(f"{a.out} is {a.checkpoint} itself (the same file, or a link to it): write the exported "
                 "checkpoint to a new file")
    state = export_state(load(a.checkpoint))
    save_atomically(state, a.out)
    cfg = state.get("cfg") or {}
    task = (cfg.get("task") or {}).get("_name")
    crit = (cfg.get("criterion") or {}).get("_name")
    print(f"wrote {a.out}: task {task}, criterion {crit}; weights unchanged")


if __name__ == "__main__":
    main()
