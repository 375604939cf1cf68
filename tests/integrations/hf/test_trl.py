"""The encouraging loss in TRL's SFTTrainer (use_encouraging_loss), on
prompt -> completion pairs with the prompt masked as TRL masks it, with a
tiny Llama-shaped model and a word-level tokenizer built here."""
import pytest
import torch

pytest.importorskip("transformers")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from tests.helpers import hf_models as H  # noqa: E402
from tests.helpers.reference import el_reference  # noqa: E402
from wce_fairseq.integrations.hf import use_encouraging_loss  # noqa: E402


def _sft(out, **kw):
    args = trl.SFTConfig(output_dir=str(out), report_to=[], use_cpu=True, bf16=False, per_device_train_batch_size=4,
                         gradient_accumulation_steps=2, learning_rate=1.0, optim="sgd", max_steps=2,
                         logging_steps=1, save_strategy="no", seed=3, lr_scheduler_type="constant", warmup_steps=0,
                         max_grad_norm=0.0, dataloader_num_workers=0, disable_tqdm=True, max_length=32,
                         completion_only_loss=True, **kw)
    return trl.SFTTrainer(model=H.model("llama"), args=args, processing_class=H.word_tokenizer(),
                          train_dataset=datasets.Dataset.from_dict(H.prompt_completion(16)))


def _logs(t):
    return [r for r in t.state.log_history if "loss" in r and "train_runtime" not in r]


def test_weight_zero_equals_trl_s_own_nll_loss_and_its_metrics_stay(tmp_path):
    """ρ = 0, ε = 0, gradient accumulation 2: TRL's own nll loss (the
    completion tokens only), the same parameters, and TRL's own metrics
    (token accuracy, entropy) logged as without the adapter."""
    own = _sft(tmp_path / "own")
    own.train()
    ours = _sft(tmp_path / "ours")
    use_encouraging_loss(ours, bonus_weight=0.0)
    ours.train()
    a, b = _logs(own), _logs(ours)
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        for key in ("loss", "mean_token_accuracy", "entropy"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-6), key
    assert "target_prob" in b[-1] and "target_prob" not in a[-1]
    pa, pb = H.params(own.model), H.params(ours.model)
    for k in pa:
        torch.testing.assert_close(pb[k], pa[k], rtol=1e-5, atol=1e-6)


def test_with_the_bonus_on_equals_the_float64_reference(tmp_path):
    """On a batch as TRL collates it (prompt labels −100): the loss of the
    scored completion tokens, next-token shifted, equals the float64 reference
    on the same logits."""
    t = _sft(tmp_path)
    fn = use_encouraging_loss(t, label_smoothing=0.1, log_end=0.75)
    batch = t.data_collator([t.train_dataset[i] for i in range(4)])
    labels = batch["labels"]
    assert (labels[:, :3] == -100).all()  # the prompt is masked
    with torch.no_grad():
        out = t.model(**{k: v for k, v in batch.items() if k != "labels"})
    logits, target = out.logits[:, :-1], labels[:, 1:]
    ref = el_reference(logits, target, label_smoothing=0.1, log_end=0.75)[0].sum() / (target != -100).sum()
    torch.testing.assert_close(fn(out, labels).double(), ref, rtol=1e-6, atol=1e-6)
