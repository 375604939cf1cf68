"""The ``TrainerCallback`` beside the loss: it feeds it the training
progress (schedules), decides the label shift from the model, refuses the
trainer arguments that would leave the loss silently off, and writes the
diagnostics into the logs — global means over every process."""
from __future__ import annotations

import torch
from transformers import TrainerCallback

from ...ops.bonus import ELConfigError
from .loss import SUM_NAMES, EncouragingLossFunc


def check_arguments(args, trainer_name: str = "the Trainer") -> None:
    """Refuse what would turn the encouraging loss off without a word."""
    eps = getattr(args, "label_smoothing_factor", 0.0) or 0.0
    if eps > 0:
        raise ELConfigError(
            f"label_smoothing_factor={eps} is set on {trainer_name}'s arguments beside the encouraging loss, which "
            "replaces the Trainer's loss (and so its label smoother): set label_smoothing_factor=0 and give the "
            f"loss label_smoothing={eps} (fairseq's convention, eps/(V-1) on the other classes)")


def global_sums(sums, device):
    """``sums`` added up over the processes of a distributed run (every rank
    calls this at the same log; a rank with nothing adds zeros)."""
    vec = sums if sums is not None else torch.zeros(len(SUM_NAMES), dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        vec = vec.clone()
        torch.distributed.all_reduce(vec)
    return vec


class EncouragingLossCallback(TrainerCallback):
    def __init__(self, loss_fn: EncouragingLossFunc):
        self.loss_fn = loss_fn

    def on_init_end(self, args, state, control, **kwargs):
        check_arguments(args)
        if getattr(args, "predict_with_generate", False):
            raise ELConfigError(
                "predict_with_generate=True: Seq2SeqTrainer then computes the evaluation loss without "
                "compute_loss_func (the model's own cross-entropy). Make the loss with "
                "use_encouraging_loss(trainer, ...), which evaluates with the encouraging loss there too")

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        check_arguments(args)
        if model is not None:
            self.loss_fn.bind_model(model)
        self.loss_fn.fit_schedule_to(state.max_steps, state.num_train_epochs)
        self.loss_fn.set_progress(state.global_step, state.epoch or 0.0)

    def on_step_begin(self, args, state, control, **kwargs):
        self.loss_fn.set_progress(state.global_step, state.epoch or 0.0)

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self.loss_fn.bind_model(model)

    def _means(self, kind, device):
        return self.loss_fn.diagnostics(sums=global_sums(self.loss_fn.take_sums(kind), device))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return
        extra = {}
        if "loss" in logs:
            extra.update(self._means("train", args.device))
        if any(k.startswith("eval_") for k in logs):
            extra.update({f"eval_{k}": v for k, v in self._means("eval", args.device).items()})
        extra = {k: round(v, 4) for k, v in extra.items()}
        logs.update(extra)
        if state.log_history:
            state.log_history[-1].update(extra)

    def on_predict(self, args, state, control, metrics=None, **kwargs):
        """``trainer.predict``: its diagnostics go into its metrics (prefixed
        as its loss is), not into the next evaluation's."""
        means = self._means("eval", args.device)
        if metrics is None:
            return
        prefix = next((k[: -len("loss")] for k in metrics if k.endswith("_loss")), "test_")
        metrics.update({f"{prefix}{k}": round(v, 4) for k, v in means.items()})
