"""``use_encouraging_loss(trainer, **options)``: the one call that puts the
encouraging loss on a ``Trainer``, ``Seq2SeqTrainer`` or TRL ``SFTTrainer``
and leaves nothing half-done (docs/huggingface.md).

It sets the trainer's ``compute_loss_func``, adds the callback (schedules,
diagnostics), refuses arguments that would switch the loss off, evaluates
with it under ``predict_with_generate``, and wraps the trainer's own
``compute_loss`` (on this trainer object only; the class is untouched) to
check each batch and, with ``fuse_projection=True``, to compute the loss
together with the output projection.
"""
from __future__ import annotations

import contextlib
from ...ops.bonus import ELConfigError
from .loss import EncouragingLossFunc, encouraging_loss_func


def use_encouraging_loss(trainer, *, fuse_projection: bool = False, **options) -> EncouragingLossFunc:
    """Train ``trainer`` with the encouraging loss; returns the loss function
    (its ``diagnostics()`` and ``bonus_weight_now`` are there to read).

    ``options`` are :func:`~wce_fairseq.integrations.hf.encouraging_loss_func`'s:
    the criterion's (``label_smoothing``, ``log_end``, ``bonus``,
    ``bonus_weight``, ``bonus_gamma``, ``bonus_start``, ``bonus_smoothing``,
    ``bonus_schedule``, ``bonus_schedule_unit``, ``bonus_schedule_length``,
    ``bonus_schedule_exp_ratio``, ``impl``) and ``shift_labels`` (None: from
    the model; a causal LM's label at position i + 1 is scored at position i,
    an encoder-decoder's are not shifted). ``fuse_projection``: compute the
    output projection and the loss together, chunk by chunk, so the N x V
    logits never exist in training (integrations/hf/fused.py; models it
    cannot reproduce are refused here). Bad values and arguments the loss
    cannot work with raise ``ELConfigError`` here, before training."""
    from .callback import check_arguments

    check_arguments(trainer.args, type(trainer).__name__)
    if getattr(trainer, "compute_loss_func", None) is not None:
        raise ELConfigError(f"{type(trainer).__name__} already has a compute_loss_func "
                            f"({trainer.compute_loss_func!r}): use_encouraging_loss would replace it")
    fn = encouraging_loss_func(**options)
    fn.bind_model(trainer.model)
    projection = None
    if fuse_projection:
        from .fused import FusedProjection

        projection = FusedProjection(trainer.model, fn)  # refuses what it cannot serve, now
    trainer.compute_loss_func = fn
    if getattr(trainer.args, "predict_with_generate", False):
        # Seq2SeqTrainer's generating evaluation skips compute_loss_func and calls label_smoother: the same loss
        trainer.label_smoother = fn
    trainer.add_callback(fn.callback())
    trainer.compute_loss = _checked_compute_loss(trainer.compute_loss, fn, projection)
    return fn


def _checked_compute_loss(compute_loss, fn: EncouragingLossFunc, projection):
    """The trainer's own ``compute_loss`` (the Trainer's, or TRL's), with
    each batch checked, its pre-shifted labels handed to the loss, and the
    fused projection in place around the forward."""

    def checked(model, inputs, return_outputs=False, num_items_in_batch=None, **kwargs):
        _check_decoder_inputs(model, inputs)
        fn.batch_shift_labels = inputs.pop("shift_labels", None)
        fused = (projection.around_forward(inputs.get("labels")) if projection is not None and not return_outputs
                 and inputs.get("labels") is not None else contextlib.nullcontext())
        try:
            with fused:
                return compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch, **kwargs)
        finally:
            fn.batch_shift_labels = fn.fused = None

    checked.__wrapped__ = compute_loss
    return checked


def _check_decoder_inputs(model, inputs) -> None:
    """An encoder-decoder batch needs its decoder inputs: the Trainer takes the
    labels out of the batch (they go to the loss), so the model cannot make
    them from the labels itself."""
    config = getattr(model, "config", None) or getattr(getattr(model, "module", None), "config", None)
    if not getattr(config, "is_encoder_decoder", False) or "labels" not in inputs:
        return
    if inputs.get("decoder_input_ids") is None and inputs.get("decoder_inputs_embeds") is None:
        raise ValueError(
            "the batch has labels but no decoder_input_ids: with a compute_loss_func the Trainer hands the labels "
            "to the loss, not to the model, so the model cannot shift them into decoder inputs. Make the batches "
            "with DataCollatorForSeq2Seq(tokenizer, model=model), which adds decoder_input_ids")
