"""``--task translation_encouraging``: fairseq's ``translation`` task, plus

* a resumed run draws the same mini-batches as an uninterrupted one, so
  resuming from ``checkpoint_last.pt`` is exact (docs/fairseq.md);
* ``--el-fuse-projection`` is checked against the model when the criterion is built.

Bonus schedules do not need this task (wce_fairseq/progress.py)."""

import inspect
from dataclasses import dataclass

from omegaconf import II

from fairseq.tasks.translation import TranslationConfig, TranslationTask

from ..registry import register_once


@dataclass
class TranslationEncouragingConfig(TranslationConfig):
    """Same options as ``translation``; the loss options belong to the criterion."""

    # fairseq's --seed (no help text: fairseq adds no second flag for it). Read
    # by get_batch_iterator to recognise --update-ordered-indices-seed.
    seed: int = II("common.seed")


@register_once("task", "translation_encouraging", dataclass=TranslationEncouragingConfig)
class TranslationEncouragingTask(TranslationTask):
    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        self._model = model
        return model

    def build_criterion(self, cfg, from_checkpoint=False):
        parent = super().build_criterion
        if "from_checkpoint" in inspect.signature(parent).parameters:  # fairseq > 0.12.3
            criterion = parent(cfg, from_checkpoint=from_checkpoint)
        else:
            criterion = parent(cfg)
        check = getattr(criterion, "check_model", None)
        model = getattr(self, "_model", None)
        if check is not None and model is not None:
            check(model)  # e.g. --el-fuse-projection on a model without a plain output projection
        return criterion

    # Reused batches are built as epoch 1 builds them, whatever epoch the process
    # starts in, so a resumed run draws the batches of an uninterrupted one
    # (docs/fairseq.md, "Resume is exact"); fresh-per-epoch batches pass through.
    def get_batch_iterator(self, dataset, *args, **kwargs):
        parent = super().get_batch_iterator
        bound = inspect.signature(parent).bind(dataset, *args, **kwargs)
        bound.apply_defaults()
        options = bound.arguments
        epoch = options["epoch"]
        reused = (not options.get("disable_iterator_cache", False)
                  and not options.get("update_epoch_batch_itr", False)
                  and not getattr(self.cfg, "rebuild_batches", False)
                  and self.can_reuse_epoch_itr(dataset))
        if not reused or epoch == 1 or dataset in self.dataset_to_epoch_iter:
            return parent(*bound.args, **bound.kwargs)
        options["epoch"] = 1
        base = getattr(self.cfg, "seed", None)
        if isinstance(base, int) and options["seed"] == base + epoch:  # --update-ordered-indices-seed
            options["seed"] = base + 1
        itr = parent(*bound.args, **bound.kwargs)
        itr.epoch = max(epoch, 1)  # a plain attribute: where next_epoch_itr continues from
        dataset.set_epoch(epoch)
        return itr
