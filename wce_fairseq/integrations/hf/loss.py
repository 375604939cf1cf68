"""The encouraging loss as a Hugging Face ``compute_loss_func``: what it
computes, how it shifts, what it divides by, the diagnostics it keeps.
Imports neither fairseq nor transformers.

Labels: −100 is ignored. A causal LM's label at position i is predicted at
position i − 1: the labels are shifted by one (padded with −100 at the end,
as transformers' ``ForCausalLMLoss`` does), never the logits copied.
Divisor: ``num_items_in_batch`` where the Trainer passes it (the whole
accumulated batch's tokens, counted as it counts them: ``labels[..., 1:]``
for causal LMs), else the batch's own count after the shift.
"""
from __future__ import annotations

import math
import sys
from typing import Optional

import torch
import torch.nn.functional as F

from ...ops.bonus import DEFAULT_LOG_END, BonusSpec, ELConfigError
from ...ops.dispatch import compute, resolve_impl
from ...schedule import DEFAULT_EXP_RATIO, DEFAULT_UNIT, BonusSchedule

IGNORE_INDEX = -100
# the sums behind the diagnostics, in this order
SUM_NAMES = ("n_tokens", "sum_target_prob", "n_well_classified", "sum_margin", "sum_bonus", "sum_bonus_weight")


def shift_for(model) -> bool:
    """Whether ``model``'s labels are shifted before scoring: causal LMs yes,
    encoder-decoders (whose decoder inputs are the labels shifted right) no."""
    config = getattr(model, "config", None)
    if config is None:
        raise ELConfigError(f"cannot tell whether {type(model).__name__} is a causal LM or an encoder-decoder "
                            "(it has no config): pass shift_labels=True or False")
    return not bool(getattr(config, "is_encoder_decoder", False))


def shifted(labels: torch.Tensor) -> torch.Tensor:
    """Label i + 1 at position i, −100 at the last position."""
    return F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]


class EncouragingLossFunc:
    """A ``compute_loss_func``: ``fn(outputs, labels, num_items_in_batch=None)``.
    Made by :func:`encouraging_loss_func` or ``use_encouraging_loss``."""

    def __init__(self, spec: BonusSpec, schedule: BonusSchedule, schedule_length_from_trainer: bool, impl: str,
                 shift_labels: Optional[bool]):
        self.spec, self.schedule, self.impl = spec, schedule, impl
        self.shift_labels = shift_labels  # None: decided from the model once it is known (bind_model)
        self._length_from_trainer = schedule_length_from_trainer
        self._current = spec.with_weight(spec.bonus_weight * schedule.factor(0))
        self._progress_fed = False
        self._sums = {"train": None, "eval": None}
        # set by use_encouraging_loss around one compute_loss call: pre-shifted labels of the batch,
        # and the fused projection's result (integrations/hf/fused.py)
        self.batch_shift_labels: Optional[torch.Tensor] = None
        self.fused = None

    # -- the loss -----------------------------------------------------------------------
    def __call__(self, outputs, labels, num_items_in_batch=None, shift_labels: Optional[bool] = None):
        """``shift_labels``: as transformers' ``LabelSmoother`` takes it (the
        path of ``Seq2SeqTrainer`` with ``predict_with_generate``); else the
        function's own setting."""
        if labels is None:
            raise ValueError("the encouraging loss needs the labels: the Trainer passes them when the batch has a "
                             "'labels' entry")
        training = torch.is_grad_enabled()
        if training and self.schedule.kind != "constant" and not self._progress_fed:
            raise RuntimeError(
                f"bonus_schedule={self.schedule.kind!r} needs the training progress, and nothing feeds it: make the "
                "loss with use_encouraging_loss(trainer, ...), or pass callbacks=[loss_fn.callback()] to the "
                "Trainer beside compute_loss_func=loss_fn")
        target = self._target(labels, shift_labels)
        if self.fused is not None:  # computed with the projection, during the forward (fused.py)
            res, self.fused = self.fused, None
        else:
            logits = outputs["logits"] if isinstance(outputs, dict) or hasattr(outputs, "keys") else outputs[0]
            res = compute(logits, target.to(logits.device), self._current, ignore_index=IGNORE_INDEX,
                          reduction="sum", impl=self.impl, want_stats=True)
        self._accumulate("train" if training else "eval", res)
        return res.loss / self._divisor(num_items_in_batch, target, res.loss)

    def _target(self, labels, shift_labels: Optional[bool]) -> torch.Tensor:
        """The label each position is scored against."""
        if self.batch_shift_labels is not None:  # the batch carried them already shifted
            return self.batch_shift_labels
        shift = self.shift_labels if shift_labels is None else shift_labels
        if shift is None:
            raise ELConfigError(
                "the encouraging loss does not know whether to shift the labels (causal LM: yes; encoder-decoder: "
                "no): make it with use_encouraging_loss(trainer, ...), pass callbacks=[loss_fn.callback()] to the "
                "Trainer, or give encouraging_loss_func(shift_labels=True or False)")
        return shifted(labels) if shift else labels

    @staticmethod
    def _divisor(num_items_in_batch, target, loss):
        if num_items_in_batch is None:
            num_items_in_batch = (target != IGNORE_INDEX).sum()
        if torch.is_tensor(num_items_in_batch):
            return num_items_in_batch.to(device=loss.device, dtype=loss.dtype).clamp_min(1)
        return max(float(num_items_in_batch), 1.0)

    def bind_model(self, model) -> None:
        """Decide the shift from ``model`` where the user left it open."""
        if self.shift_labels is None:
            self.shift_labels = shift_for(model)

    def _accumulate(self, kind, res):
        d = res.stats
        add = torch.stack([d.n_tokens, d.sum_target_prob, d.n_well_classified, d.sum_margin,
                           res.bonus_loss.detach().double(), d.n_tokens * self._current.bonus_weight])
        old = self._sums[kind]
        self._sums[kind] = add if old is None else old + add

    # -- schedule -----------------------------------------------------------------------
    def set_progress(self, global_step: int, epoch: float = 0.0) -> None:
        """The training progress (from the callback): updates applied and
        epochs (fractional, as ``TrainerState.epoch``)."""
        self._progress_fed = True
        t = self.schedule.progress(int(math.floor(epoch)) + 1, int(global_step))
        rho_t = self.spec.bonus_weight * self.schedule.factor(t)
        if rho_t != self._current.bonus_weight:
            self._current = self.spec.with_weight(rho_t)

    def fit_schedule_to(self, max_steps: int, num_train_epochs: float) -> None:
        """A schedule given no length spans the run: ``max_steps`` updates, or
        the run's real number of epochs (the Trainer's, ``max_steps`` included)."""
        if not self._length_from_trainer:
            return
        length = max_steps if self.schedule.unit == "update" else num_train_epochs
        if not 0 < length < sys.maxsize:  # the Trainer's sys.maxsize: epochs of a dataset without a length
            raise ELConfigError(
                f"bonus_schedule_unit={self.schedule.unit!r} without bonus_schedule_length spans the run, whose "
                f"length in {self.schedule.unit}s the Trainer does not know (a dataset without a length): give "
                "bonus_schedule_length")
        self.schedule = BonusSchedule(self.schedule.kind, self.schedule.unit, float(length), self.schedule.exp_ratio)

    @property
    def bonus_weight_now(self) -> float:
        return self._current.bonus_weight

    # -- diagnostics ----------------------------------------------------------------------
    def take_sums(self, kind: str) -> Optional[torch.Tensor]:
        """The sums (``SUM_NAMES``) since the last call, and a fresh start."""
        sums, self._sums[kind] = self._sums[kind], None
        return sums

    def diagnostics(self, kind: str = "train", reset: bool = True, sums: Optional[torch.Tensor] = None) -> dict:
        """Means per token since the last call (of ``sums`` where given):
        bonus_weight, target_prob, well_classified, margin and bonus (as the
        loss). ``kind``: "train", or "eval" for the no-grad calls of
        evaluation and prediction."""
        if sums is None:
            sums = self.take_sums(kind) if reset else self._sums[kind]
        if sums is None:
            return {}
        n, p, well, margin, bonus, rho = (float(x) for x in sums)
        if n <= 0:
            return {}
        return {"bonus_weight": rho / n, "target_prob": p / n, "well_classified": well / n, "margin": margin / n,
                "bonus": bonus / n}

    def callback(self):
        """The ``TrainerCallback`` that feeds this loss the training progress,
        checks the trainer's arguments, and logs the diagnostics."""
        from .callback import EncouragingLossCallback

        return EncouragingLossCallback(self)


def encouraging_loss_func(
    *,
    label_smoothing: float = 0.0,
    log_end: float = DEFAULT_LOG_END,
    bonus: str = "log",
    bonus_weight: float = 1.0,
    bonus_gamma: Optional[float] = None,
    bonus_start: float = 0.0,
    bonus_smoothing: Optional[float] = None,
    bonus_schedule: str = "constant",
    bonus_schedule_unit: str = DEFAULT_UNIT,
    bonus_schedule_length: Optional[float] = None,
    bonus_schedule_exp_ratio: float = DEFAULT_EXP_RATIO,
    impl: str = "auto",
    shift_labels: Optional[bool] = None,
) -> EncouragingLossFunc:
    """A ``compute_loss_func`` with the criterion's options. ``shift_labels``:
    None decides from the model (causal LM: shift; encoder-decoder: not) once
    the callback or ``use_encouraging_loss`` has seen it. Bad values fail
    here, before training, with the option and its range."""
    spec = BonusSpec(label_smoothing=label_smoothing, log_end=log_end, bonus=bonus, bonus_weight=bonus_weight,
                     bonus_gamma=bonus_gamma, bonus_start=bonus_start, bonus_smoothing=bonus_smoothing)
    from_trainer = bonus_schedule != "constant" and bonus_schedule_length is None
    schedule = BonusSchedule(bonus_schedule, bonus_schedule_unit, 1.0 if from_trainer else bonus_schedule_length,
                             bonus_schedule_exp_ratio)
    schedule.check_applies_to(spec)
    resolve_impl(impl)  # a known name, one this machine can run
    if shift_labels is not None and not isinstance(shift_labels, bool):
        raise ELConfigError(f"shift_labels must be True, False or None (decided from the model); got {shift_labels!r}")
    return EncouragingLossFunc(spec, schedule, from_trainer, impl, shift_labels)
