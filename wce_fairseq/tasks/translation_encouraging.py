"""``--task translation_encouraging``: fairseq's ``translation`` task that tells
the criterion the training progress before every step, so bonus schedules
advance (the authors' fork never called the hook), and that keeps telling it
after a resume (epoch and update counters come from the checkpoint)."""

from dataclasses import dataclass

from fairseq.tasks.translation import TranslationConfig, TranslationTask

from ..registry import register_once


@dataclass
class TranslationEncouragingConfig(TranslationConfig):
    """Same options as ``translation``; the loss options belong to the criterion."""


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
