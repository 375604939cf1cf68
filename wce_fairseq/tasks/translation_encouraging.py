"""``--task translation_encouraging``: fairseq's ``translation`` task that tells
the criterion the training progress before every step, so bonus schedules
advance (the authors' fork never called the hook), and that keeps telling it
after a resume (epoch and update counters come from the checkpoint).

It also makes a resumed run draw the same mini-batches as an uninterrupted one
(see ``get_batch_iterator``)."""

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


def _tell(criterion, **progress) -> None:
    hook = getattr(criterion, "set_progress", None)
    if hook is not None:
        hook(**progress)


@register_once("task", "translation_encouraging", dataclass=TranslationEncouragingConfig)
class TranslationEncouragingTask(TranslationTask):
    def __init__(self, cfg, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        self.epoch = 1

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        self._model = model
        return model

    def build_criterion(self, cfg, from_checkpoint=False):
        criterion = super().build_criterion(cfg, from_checkpoint)
        check = getattr(criterion, "check_model", None)
        model = getattr(self, "_model", None)
        if check is not None and model is not None:
            check(model)  # e.g. --el-fuse-projection on a model without a plain output projection
        return criterion

    # fairseq >= 0.12 sorts the training set under ``numpy_seed(seed + epoch)``
    # once per process, with the epoch the process starts in, and reuses those
    # batches for every later epoch. An uninterrupted run therefore trains all
    # epochs on the batches of epoch 1, while a run resumed at epoch k builds
    # them from seed + k: the same sentences split and ordered differently, so
    # the resumed parameters drift from the uninterrupted ones. Where batches
    # are reused across epochs we always build them as epoch 1 would, which
    # keeps an uninterrupted run identical to ``--task translation`` and makes
    # a resumed run identical to it too. Where fairseq rebuilds batches every
    # epoch (``rebuild_batches``, sharded data, ``disable_iterator_cache``) it
    # already depends on the epoch alone and is left as it is. With
    # ``--update-ordered-indices-seed`` the trainer also passes seed + epoch,
    # which moves the iterator's shuffle as well: we pass seed + 1 instead,
    # again what epoch 1 got.
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

    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        self.epoch = epoch

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        _tell(criterion, epoch=self.epoch, num_updates=update_num)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def valid_step(self, sample, model, criterion):
        # Validation reports ρ_t and the diagnostics at the current progress.
        _tell(criterion, epoch=self.epoch)
        return super().valid_step(sample, model, criterion)
