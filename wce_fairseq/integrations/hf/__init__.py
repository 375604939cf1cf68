"""The encouraging loss for Hugging Face Transformers and TRL
(docs/huggingface.md):

    from wce_fairseq.integrations.hf import use_encouraging_loss
    use_encouraging_loss(trainer, label_smoothing=0.1, log_end=0.5)   # Trainer, Seq2SeqTrainer, SFTTrainer

or, as the Trainer's own hooks, ``compute_loss_func=loss_fn`` with
``callbacks=[loss_fn.callback()]`` for ``loss_fn = encouraging_loss_func(...)``.

* ``loss.py``: the loss (shift, divisor, diagnostics); no transformers needed;
* ``callback.py``: progress, argument checks, diagnostics in the logs;
* ``trainer.py``: ``use_encouraging_loss``;
* ``fused.py``: the output projection and the loss fused (``fuse_projection=True``).

Importing this package loads neither fairseq nor transformers.
"""
from .loss import IGNORE_INDEX, EncouragingLossFunc, encouraging_loss_func
from .trainer import use_encouraging_loss

__all__ = ["use_encouraging_loss", "encouraging_loss_func", "EncouragingLossFunc", "IGNORE_INDEX"]
