"""The encouraging loss for Hugging Face Transformers' ``Trainer`` and
``Seq2SeqTrainer``, through their ``compute_loss_func`` hook
(docs/huggingface.md). Imports neither fairseq nor, until a callback is made,
transformers.

    loss_fn = encouraging_loss_func(label_smoothing=0.1, log_end=0.5)
    trainer = Seq2SeqTrainer(..., compute_loss_func=loss_fn, callbacks=[loss_fn.callback()])

Label smoothing is fairseq's (ε/(V − 1) on the other classes, where Hugging
Face's ``label_smoothing_factor`` uses ε/V); −100 labels are ignored; the sum
is divided by ``num_items_in_batch`` when the Trainer passes it.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..ops.bonus import DEFAULT_LOG_END, BonusSpec
from ..ops.dispatch import compute, resolve_impl
from ..schedule import DEFAULT_EXP_RATIO, DEFAULT_UNIT, BonusSchedule

IGNORE_INDEX = -100


class EncouragingLossFunc:
    """A ``compute_loss_func``: ``fn(outputs, labels, num_items_in_batch=None)``."""

    def __init__(self, spec: BonusSpec, schedule: BonusSchedule, schedule_length_from_trainer: bool, impl: str,
                 shift_labels: bool):
        self.spec, self.schedule, self.impl, self.shift_labels = spec, schedule, impl, shift_labels
        self._length_from_trainer = schedule_length_from_trainer
        self._current = spec.with_weight(spec.bonus_weight * schedule.factor(0))
        self._sums = {"train": None, "eval": None}

    # -- the loss -----------------------------------------------------------------------
    def __call__(self, outputs, labels, num_items_in_batch=None):
        if labels is None:
            raise ValueError("encouraging_loss_func needs the labels: the Trainer passes them when the batch has "
                             "a 'labels' entry")
        logits = outputs["logits"] if isinstance(outputs, dict) or hasattr(outputs, "keys") else outputs[0]
        if self.shift_labels:  # causal LMs: the token at position i predicts label i + 1
            logits, labels = logits[..., :-1, :], labels[..., 1:]
        res = compute(logits, labels.to(logits.device), self._current, ignore_index=IGNORE_INDEX,
                      reduction="sum", impl=self.impl, want_stats=True)
        if num_items_in_batch is None:
            num_items_in_batch = (labels != IGNORE_INDEX).sum()
        if torch.is_tensor(num_items_in_batch):
            denom = num_items_in_batch.to(device=res.loss.device, dtype=res.loss.dtype).clamp_min(1)
        else:
            denom = max(float(num_items_in_batch), 1.0)
        self._accumulate("train" if torch.is_grad_enabled() else "eval", res)
        return res.loss / denom

    def _accumulate(self, kind, res):
        d = res.stats
        add = (d.n_tokens, d.sum_target_prob, d.n_well_classified, d.sum_margin, res.bonus_loss.detach().double(),
               d.n_tokens * self._current.bonus_weight)
        old = self._sums[kind]
        self._sums[kind] = list(add) if old is None else [a + b for a, b in zip(old, add)]

    # -- schedule -----------------------------------------------------------------------
    def set_progress(self, global_step: int, epoch: float = 0.0) -> None:
        t = self.schedule.progress(int(math.floor(epoch)) + 1, int(global_step))
        rho_t = self.spec.bonus_weight * self.schedule.factor(t)
        if rho_t != self._current.bonus_weight:
            self._current = self.spec.with_weight(rho_t)

    def fit_schedule_to(self, max_steps: int, num_train_epochs: float) -> None:
        """A schedule given no length spans the run."""
        if self._length_from_trainer:
            length = max_steps if self.schedule.unit == "update" else num_train_epochs
            self.schedule = BonusSchedule(self.schedule.kind, self.schedule.unit, float(max(length, 1)),
                                          self.schedule.exp_ratio)

    @property
    def bonus_weight_now(self) -> float:
        return self._current.bonus_weight

    # -- diagnostics ----------------------------------------------------------------------
    def diagnostics(self, kind: str = "train", reset: bool = True) -> dict:
        """Means since the last call: bonus_weight, target_prob, well_classified,
        margin (per token) and bonus (per token, as the loss)."""
        sums = self._sums[kind]
        if reset:
            self._sums[kind] = None
        if sums is None:
            return {}
        n, p, well, margin, bonus, rho = (float(x) for x in sums)
        if n <= 0:
            return {}
        return {"bonus_weight": rho / n, "target_prob": p / n, "well_classified": well / n, "margin": margin / n,
                "bonus": bonus / n}

    def callback(self):
        """The ``TrainerCallback`` that feeds this loss the training progress and logs its diagnostics."""
        return _make_callback(self)


def _make_callback(loss_fn: EncouragingLossFunc):
    from transformers import TrainerCallback

    class EncouragingLossCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            loss_fn.fit_schedule_to(state.max_steps, args.num_train_epochs)
            loss_fn.set_progress(state.global_step, state.epoch or 0.0)

        def on_step_begin(self, args, state, control, **kwargs):
            loss_fn.set_progress(state.global_step, state.epoch or 0.0)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is None:
                return
            extra = {}
            if "loss" in logs:
                extra.update(loss_fn.diagnostics("train"))
            if any(k.startswith("eval_") for k in logs):
                extra.update({f"eval_{k}": v for k, v in loss_fn.diagnostics("eval").items()})
            extra = {k: round(v, 4) for k, v in extra.items()}
            logs.update(extra)
            if state.log_history:
                state.log_history[-1].update(extra)

    return EncouragingLossCallback()


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
    shift_labels: bool = False,
) -> EncouragingLossFunc:
    """A ``compute_loss_func`` for ``Trainer``/``Seq2SeqTrainer`` with the
    criterion's options (``shift_labels`` for causal LMs). Bad values fail here,
    before training, with the option and its range."""
    spec = BonusSpec(label_smoothing=label_smoothing, log_end=log_end, bonus=bonus, bonus_weight=bonus_weight,
                     bonus_gamma=bonus_gamma, bonus_start=bonus_start, bonus_smoothing=bonus_smoothing)
    from_trainer = bonus_schedule != "constant" and bonus_schedule_length is None
    schedule = BonusSchedule(bonus_schedule, bonus_schedule_unit, 1.0 if from_trainer else bonus_schedule_length,
                             bonus_schedule_exp_ratio)
    schedule.check_applies_to(spec)
    resolve_impl(impl)  # a known name, one this machine can run
    return EncouragingLossFunc(spec, schedule, from_trainer, impl, bool(shift_labels))
