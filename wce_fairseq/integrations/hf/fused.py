"""``use_encouraging_loss(trainer, fuse_projection=True)``: the output
projection and the loss computed together, so a training step never holds
the N x V logits (nor their gradient).

For the length of one forward, a forward pre-hook on the model's output
embedding (``model.get_output_embeddings()``, the ``lm_head``) takes the
hidden states it is given — after whatever the model does before it: T5's
rescaling, a final norm — computes the loss from them, the projection's
weight and bias (and a ``final_logits_bias`` added after it, as Marian's),
chunk by chunk (``ops/fused_linear.py``, the core the fairseq criterion's
``--el-fuse-projection`` runs), and hands the projection an empty slice in
their place: the model returns logits with no positions, and the loss
function takes the result the hook made. The hook is removed when the
forward returns, so evaluation, generation and anything else that needs
logits get them as usual; nothing in transformers' classes is changed.

A model whose logits are more than that projection is refused when the
loss is set up, naming the model and what it does: a known post-processing
attribute (Gemma's ``final_logit_softcapping``, a ``logit_scale`` ...), an
output embedding that is not a plain ``nn.Linear`` (a LoRA-wrapped
``lm_head``, or one FSDP shards as a unit of its own), or — for anything
else — logits that differ from the projection of the hidden states on a
probe batch.

FSDP: the hook runs inside the forward of the FSDP unit that holds the
output embedding (the model's root unit, as FSDP usually wraps it), where
FSDP has gathered that unit's parameters, as for any of its submodules; the
weight's gradient, returned by the loss's backward, reaches the gathered
parameter, and FSDP reduces it to the shards as it does every other
gradient. A weight still sharded inside the forward is refused there.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ...ops.bonus import ELConfigError
from ...ops.fused_linear import fused_linear_encouraging_loss
from .loss import IGNORE_INDEX, EncouragingLossFunc

# config attributes by which models change their logits after the output projection
POST_PROCESSING = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                   "logits_scaling")


def _base(model):
    """The transformers model inside a peft wrapper."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def _config(model):
    config = getattr(_base(model), "config", None)
    get_text = getattr(config, "get_text_config", None)
    return get_text() if callable(get_text) else config


class FusedProjection:
    def __init__(self, model, loss_fn: EncouragingLossFunc):
        self.loss_fn = loss_fn
        self.name = type(_base(model)).__name__
        self._refuse_post_processing(model)
        self.head = self._output_linear(model)
        self.extra_bias = getattr(_base(model), "final_logits_bias", None)
        self._probe(model)

    # -- what the fused path can serve ------------------------------------------------
    def _refuse_post_processing(self, model) -> None:
        config = _config(model)
        for attr in POST_PROCESSING:
            value = getattr(config, attr, None)
            if value is not None and value != 1:
                raise ELConfigError(
                    f"fuse_projection=True cannot serve {self.name}: its config sets {attr}={value!r}, which changes "
                    "the logits after the output projection; the fused loss computes the projection alone. Train "
                    "this model with fuse_projection=False")

    def _output_linear(self, model):
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if type(head) is not nn.Linear:
            what = "none" if head is None else type(head).__module__ + "." + type(head).__name__
            raise ELConfigError(
                f"fuse_projection=True cannot serve {self.name}: its output embedding is {what}, not a plain "
                "torch.nn.Linear (a LoRA or quantised lm_head, or one FSDP shards as a unit of its own); train with "
                "fuse_projection=False")
        return head

    @torch.no_grad()
    def _probe(self, model) -> None:
        """On a small batch, the model's logits must be the projection of what
        its output embedding receives."""
        base = _base(model)
        device = self.head.weight.device
        ids = torch.arange(2, 7, device=device).remainder(self.head.out_features).unsqueeze(0)
        inputs = {"input_ids": ids}
        if getattr(_config(model), "is_encoder_decoder", False):
            inputs["decoder_input_ids"] = ids
        seen = []
        hook = self.head.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        was_training = base.training
        base.eval()
        try:
            logits = base(**inputs).logits
        except Exception as e:  # a model that needs more inputs than ids cannot be probed: refuse, saying so
            raise ELConfigError(f"fuse_projection=True could not check {self.name} on a probe batch "
                                f"({type(e).__name__}: {e}); train it with fuse_projection=False") from e
        finally:
            hook.remove()
            base.train(was_training)
        if len(seen) != 1:
            raise ELConfigError(f"fuse_projection=True cannot serve {self.name}: its forward calls its output "
                                f"embedding {len(seen)} times, not once")
        want = self._logits(seen[0])
        err = float((logits.float() - want.float()).abs().max()) if logits.shape == want.shape else float("inf")
        if not err <= 1e-4 * max(1.0, float(want.abs().max())):
            raise ELConfigError(
                f"fuse_projection=True cannot serve {self.name}: its logits are not its output embedding's "
                f"projection of the hidden states it receives (largest difference {err:.3g} on a probe batch); "
                "train it with fuse_projection=False")

    def _bias(self):
        bias = self.head.bias
        if self.extra_bias is not None:
            extra = self.extra_bias.reshape(-1).to(self.head.weight.dtype)
            bias = extra if bias is None else bias + extra
        return bias

    def _logits(self, h):
        return nn.functional.linear(h, self.head.weight, self._bias())

    # -- one forward ----------------------------------------------------------------------
    @contextlib.contextmanager
    def around_forward(self, labels):
        """The hook in place for one forward with these ``labels``."""
        fn, calls = self.loss_fn, []
        target = fn._target(labels, None)

        def hook(module, args):
            calls.append(1)
            if len(calls) > 1:
                raise RuntimeError(f"fuse_projection: {self.name} called its output embedding twice in one forward")
            h = args[0]
            if _is_sharded(module.weight):
                raise RuntimeError(
                    f"fuse_projection: {self.name}'s output weight is still sharded inside the forward (FSDP shards "
                    "the output embedding as a unit of its own); train with fuse_projection=False")
            fn.fused = fused_linear_encouraging_loss(
                h, module.weight, self._bias(), target.to(h.device), fn._current, ignore_index=IGNORE_INDEX,
                reduction="sum", want_stats=True, impl=fn.impl)
            return (h[..., :0, :],) + tuple(args[1:])

        handle = self.head.register_forward_pre_hook(hook)
        try:
            yield
        finally:
            handle.remove()
        if not calls:
            raise RuntimeError(f"fuse_projection: {self.name}'s forward did not call its output embedding "
                               f"({type(self.head).__name__}), so the fused loss was not computed")


def _is_sharded(weight) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without DTensor
        return False
    return isinstance(weight, DTensor)
