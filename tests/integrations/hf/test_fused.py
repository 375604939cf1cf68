"""integrations/hf/fused.py: use_encouraging_loss(trainer, fuse_projection=True)
against the same loss on the model's logits — loss, diagnostics and the
gradient of every trainable parameter — for the five model shapes, with
label smoothing, the bonus, ignored tokens and the causal shift; with
gradient accumulation, LoRA, gradient checkpointing and bf16 autocast; and
the models it refuses. (Two processes: tests/integrations/hf/test_distributed.py.)"""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from tests.helpers import hf_models as H  # noqa: E402
from wce_fairseq.integrations.hf import use_encouraging_loss  # noqa: E402
from wce_fairseq.ops.bonus import ELConfigError  # noqa: E402

OPTIONS = dict(label_smoothing=0.1, log_end=0.75, bonus_weight=1.5)


def _step(kind, out, fuse, m=None, **kw):
    """One compute_loss + backward of a Trainer set up with the loss: (loss,
    diagnostics, gradients by name, logit positions the model returned)."""
    t = H.trainer(kind, out, m=m if m is not None else H.model(kind))
    fn = use_encouraging_loss(t, fuse_projection=fuse, **OPTIONS, **kw)
    t.model.train()
    inputs = H.batch(kind, 6)
    positions = []
    hook = t.model.register_forward_hook(lambda mod, args, output: positions.append(output.logits.shape[-2]))
    loss = t.compute_loss(t.model, dict(inputs))
    hook.remove()
    loss.backward()
    grads = {k: p.grad.clone() for k, p in t.model.named_parameters() if p.requires_grad and p.grad is not None}
    return loss.detach(), fn.diagnostics(), grads, positions


def _assert_same(plain, fused, loss_rtol=1e-5, grad_rtol=1e-4):
    torch.testing.assert_close(fused[0], plain[0], rtol=loss_rtol, atol=0)
    assert fused[1].keys() == plain[1].keys() and fused[1]
    for k in plain[1]:
        assert fused[1][k] == pytest.approx(plain[1][k], rel=1e-5, abs=1e-6), k
    assert fused[2].keys() == plain[2].keys()
    for k, g in plain[2].items():
        scale = float(g.abs().max())
        assert float((fused[2][k] - g).abs().max()) <= grad_rtol * max(scale, 1e-6), k


@pytest.mark.parametrize("kind", H.SHAPES)
def test_fused_equals_the_logits_path(kind, tmp_path):
    plain = _step(kind, tmp_path / "plain", False)
    fused = _step(kind, tmp_path / "fused", True)
    _assert_same(plain, fused)
    assert plain[3] == [9] and fused[3] == [0]  # no logit positions come out of the fused forward


@pytest.mark.parametrize("kind", H.SHAPES)
def test_fused_with_gradient_checkpointing(kind, tmp_path):
    runs = []
    for fuse in (False, True):
        m = H.model(kind)
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        runs.append(_step(kind, tmp_path / str(fuse), fuse, m=m))
    _assert_same(*runs)


# the attention projections LoRA adapts, by model shape
LORA_TARGETS = {"llama": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"], "gpt2": ["c_attn"],
                "marian": ["q_proj", "v_proj"], "t5": ["q", "v"]}


@pytest.mark.parametrize("kind", H.SHAPES)
def test_fused_with_lora(kind, tmp_path):
    """peft LoRA on the attention projections (the output embedding frozen):
    the LoRA parameters' gradients equal the logits path's."""
    peft = pytest.importorskip("peft")
    runs = []
    for fuse in (False, True):
        m = peft.get_peft_model(H.model(kind), peft.LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS[kind],
                                                               lora_dropout=0.0, init_lora_weights=False))
        runs.append(_step(kind, tmp_path / str(fuse), fuse, m=m))
    assert runs[0][2] and all("lora_" in k for k in runs[0][2])
    _assert_same(*runs)


@pytest.mark.parametrize("kind", H.SHAPES)
def test_fused_training_with_gradient_accumulation_and_bf16_autocast(kind, tmp_path):
    """Two updates of 2 x 4 accumulated, fp32 and under bf16 autocast: the
    same logged losses and parameters as the logits path (bf16: within the
    rounding of bf16 logits, which the two paths round at different points)."""
    for bf16, rtol in ((False, 1e-5), (True, 2e-2)):
        runs = []
        for fuse in (False, True):
            t = H.trainer(kind, tmp_path / f"{bf16}{fuse}", gradient_accumulation_steps=2, bf16=bf16,
                          learning_rate=0.1)
            use_encouraging_loss(t, fuse_projection=fuse, **OPTIONS)
            t.train()
            runs.append((H.losses(t), H.params(t.model)))
        (l_plain, p_plain), (l_fused, p_fused) = runs
        assert l_fused == pytest.approx(l_plain, rel=rtol)
        for k in p_plain:
            torch.testing.assert_close(p_fused[k], p_plain[k], rtol=rtol, atol=rtol * 0.1)


def test_evaluation_and_prediction_get_logits(tmp_path):
    """The hook lives for one training forward: evaluation scores with the
    logits and prediction returns them."""
    t = H.trainer("llama", tmp_path)
    use_encouraging_loss(t, fuse_projection=True, **OPTIONS)
    t.train()
    pred = t.predict(H.Rows("llama", 4, seed=5))
    assert pred.predictions.shape == (4, 9, H.V) and "test_loss" in pred.metrics


@pytest.mark.parametrize("kind, overrides, words", [
    ("gemma2", {}, "Gemma2ForCausalLM: its config sets final_logit_softcapping=30.0"),
    ("llama", {"logit_scale": 0.5}, "LlamaForCausalLM: its config sets logit_scale=0.5"),
])
def test_post_processed_logits_are_refused_by_name(kind, overrides, words, tmp_path):
    t = H.trainer("llama", tmp_path, m=H.model(kind, **overrides))
    with pytest.raises(ELConfigError, match=words):
        use_encouraging_loss(t, fuse_projection=True)
    assert t.compute_loss_func is None  # refused before anything was set


def test_unknown_post_processing_is_refused_by_the_probe(tmp_path):
    """A model that changes its logits in a way no attribute announces: its
    logits on a probe batch are not the projection of the hidden states."""
    class Doubled(transformers.LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2
            return out

    torch.manual_seed(0)
    t = H.trainer("llama", tmp_path, m=Doubled(H.config("llama")))
    with pytest.raises(ELConfigError, match="Doubled: its logits are not its output embedding's projection"):
        use_encouraging_loss(t, fuse_projection=True)


def test_lora_on_the_output_embedding_is_refused(tmp_path):
    peft = pytest.importorskip("peft")
    m = peft.get_peft_model(H.model("llama"), peft.LoraConfig(r=4, target_modules=["lm_head"]))
    t = H.trainer("llama", tmp_path, m=m)
    with pytest.raises(ELConfigError, match="LlamaForCausalLM: its output embedding is peft.*not a plain"):
        use_encouraging_loss(t, fuse_projection=True)
