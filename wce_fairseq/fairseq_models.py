"""What the criterion needs to know about a fairseq model.

The criterion reads a model's raw logits only where its distribution is a
plain log-softmax of them; everything else (adaptive softmax, models with
their own normalisation) goes through the model's ``get_normalized_probs``.
The fused projection additionally needs the decoder's output ``nn.Linear``.
"""
from __future__ import annotations

import torch

from .ops.bonus import ELConfigError


def unwrap(model):
    """The fairseq model inside fairseq's distributed wrappers
    (``ModuleProxyWrapper`` around a DDP module): type checks must see it."""
    from fairseq.models import BaseFairseqModel

    while not isinstance(model, BaseFairseqModel) and isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module
    return model


def plain_log_softmax(model) -> bool:
    """True when ``model.get_normalized_probs`` is a plain log-softmax of
    ``net_output[0]`` (stock fairseq models without adaptive softmax)."""
    from fairseq.models import BaseFairseqModel, FairseqDecoder

    model = unwrap(model)
    dec = getattr(model, "decoder", None)
    if dec is None or getattr(dec, "adaptive_softmax", None) is not None:
        return False
    allowed = {BaseFairseqModel.get_normalized_probs}
    try:
        from fairseq.models.transformer import TransformerModelBase

        allowed.add(TransformerModelBase.get_normalized_probs)  # delegates to the scriptable one
    except ImportError:
        pass
    m, d = type(model), type(dec)
    return (
        m.get_normalized_probs in allowed
        and m.get_normalized_probs_scriptable is BaseFairseqModel.get_normalized_probs_scriptable
        and d.get_normalized_probs is FairseqDecoder.get_normalized_probs
        and d.get_normalized_probs_scriptable is FairseqDecoder.get_normalized_probs_scriptable
    )


def output_projection(model):
    """The decoder's output ``nn.Linear``, when logits = output_projection(features)
    and the distribution is their plain log-softmax; else a clear error."""
    from torch import nn

    model = unwrap(model)
    dec = getattr(model, "decoder", None)
    proj = getattr(dec, "output_projection", None)
    if not isinstance(proj, nn.Linear) or not plain_log_softmax(model):
        why = "it uses an adaptive softmax" if getattr(dec, "adaptive_softmax", None) is not None else (
            "its decoder has no plain nn.Linear output_projection followed by log-softmax")
        raise ELConfigError(f"--el-fuse-projection cannot be used with {type(model).__name__}: {why}. "
                         "It supports fairseq Transformer-style decoders; drop the flag for this model.")
    return proj
