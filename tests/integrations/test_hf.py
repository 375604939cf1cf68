"""wce_fairseq.integrations.hf: the loss as a Hugging Face ``compute_loss_func``,
with tiny Marian and T5 models built from configs (no download)."""
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers.reference import el_reference
from wce_fairseq.ops.bonus import ELConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
V = 300


def test_adapter_imports_and_runs_without_transformers_or_fairseq():
    code = ("import sys; sys.modules['transformers'] = None; sys.modules['fairseq'] = None\n"
            "import torch\n"
            "from wce_fairseq.integrations.hf import encouraging_loss_func\n"
            "fn = encouraging_loss_func(label_smoothing=0.1)\n"
            "loss = fn({'logits': torch.randn(2, 3, 11)}, torch.tensor([[1, 2, -100], [3, 4, 5]]))\n"
            "assert torch.isfinite(loss), loss\n"
            "try:\n    fn.callback()\nexcept ImportError as e:\n    print('callback needs transformers')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "callback needs transformers" in p.stdout


@pytest.mark.parametrize("kw, words", [
    (dict(log_end=1.5), ["log_end", "(0, 1]"]),
    (dict(bonus_gamma=2.0), ["bonus_gamma", "--bonus power"]),
    (dict(bonus_schedule="linear", bonus_schedule_exp_ratio=3.0), ["bonus_schedule_exp_ratio", "exp"]),
    (dict(bonus_schedule="warmup"), ["bonus_schedule", "constant"]),
    (dict(impl="cuda"), ["impl"]),
])
def test_bad_options_fail_before_training(kw, words):
    from wce_fairseq.integrations.hf import encouraging_loss_func

    with pytest.raises(ELConfigError) as e:
        encouraging_loss_func(**kw)
    for w in words:
        assert w in str(e.value)


try:
    import transformers
except ImportError:  # the tests above run without it
    transformers = None
needs_transformers = pytest.mark.skipif(transformers is None, reason="transformers is not installed")


def _marian(seed=0):
    cfg = transformers.MarianConfig(
        vocab_size=V, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, forced_eos_token_id=1, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0)
    torch.manual_seed(seed)
    return transformers.MarianMTModel(cfg).eval()


def _t5(seed=0):
    cfg = transformers.T5Config(vocab_size=V, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_decoder_layers=1,
                                num_heads=2, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
                                decoder_start_token_id=0)
    torch.manual_seed(seed)
    return transformers.T5ForConditionalGeneration(cfg).eval()


def _batch(n, seed=1, length=7):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(2, V, (n, length), generator=g)
    labels = torch.randint(2, V, (n, length - 1), generator=g)
    labels[::3, -2:] = -100  # padded label positions
    return src, labels


@needs_transformers
@pytest.mark.parametrize("make", [_marian, _t5], ids=["marian", "t5"])
def test_weight_zero_equals_the_model_s_own_loss(make):
    from wce_fairseq.integrations.hf import encouraging_loss_func

    model = make()
    src, labels = _batch(5)
    own = model(input_ids=src, labels=labels)  # the model's cross-entropy, mean over the labels
    dec = model.prepare_decoder_input_ids_from_labels(labels=labels)
    out = model(input_ids=src, decoder_input_ids=dec)
    ours = encouraging_loss_func(bonus_weight=0.0)(out, labels)
    torch.testing.assert_close(ours, own.loss, rtol=1e-6, atol=1e-6)


@needs_transformers
def test_smoothing_is_fairseq_s_not_hf_s():
    """At bonus weight 0 with ε = 0.1: fairseq's label-smoothed CE (ε/(V-1)),
    not the Trainer's label smoother (ε/V)."""
    from transformers.trainer_pt_utils import LabelSmoother

    from wce_fairseq.integrations.hf import encouraging_loss_func

    _, labels = _batch(5)
    logits = torch.randn(*labels.shape, V, generator=torch.Generator().manual_seed(0))
    logits.scatter_add_(-1, labels.clamp_min(0).unsqueeze(-1), torch.full((*labels.shape, 1), 8.0))  # confident
    out = {"logits": logits}
    ours = encouraging_loss_func(label_smoothing=0.1, bonus_weight=0.0)(out, labels)
    ref, _, _ = el_reference(logits, labels, label_smoothing=0.1, bonus_weight=0.0)
    torch.testing.assert_close(ours.double(), ref.sum() / (labels != -100).sum(), rtol=1e-6, atol=1e-6)
    hf = LabelSmoother(epsilon=0.1)(out, labels)
    assert abs(float(hf) - float(ours)) > 1e-3  # a different convention


@needs_transformers
def test_encouraging_loss_equals_the_reference():
    from wce_fairseq.integrations.hf import encouraging_loss_func

    model = _marian()
    src, labels = _batch(6)
    out = model(input_ids=src, decoder_input_ids=model.prepare_decoder_input_ids_from_labels(labels=labels))
    fn = encouraging_loss_func(label_smoothing=0.1, log_end=0.75)
    ours = fn(out, labels)
    ref, _, _ = el_reference(out.logits.detach(), labels, label_smoothing=0.1, log_end=0.75)
    torch.testing.assert_close(ours.double(), ref.sum() / (labels != -100).sum(), rtol=1e-6, atol=1e-6)
    # num_items_in_batch (the whole accumulated batch) replaces the batch's own count
    torch.testing.assert_close(fn(out, labels, num_items_in_batch=torch.tensor(40)).double(), ref.sum() / 40,
                               rtol=1e-6, atol=1e-6)


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, n, seed=1):
        self.src, self.labels = _batch(n, seed)

    def __len__(self):
        return len(self.src)

    def __getitem__(self, i):
        labels = self.labels[i]
        dec = torch.cat([torch.zeros(1, dtype=torch.long), labels[:-1].clamp_min(0)])  # shifted right, pad = 0
        return {"input_ids": self.src[i], "decoder_input_ids": dec, "labels": labels}


def _trainer(tmp_path, model, loss_fn, **kw):
    args = dict(output_dir=str(tmp_path), report_to=[], use_cpu=True, per_device_train_batch_size=4,
                learning_rate=1e-2, max_steps=6, logging_steps=1, save_strategy="no", seed=3,
                dataloader_num_workers=0, disable_tqdm=True, lr_scheduler_type="constant", warmup_steps=0)
    args.update(kw)
    return transformers.Seq2SeqTrainer(model=model, args=transformers.Seq2SeqTrainingArguments(**args),
                                       train_dataset=_Pairs(48), compute_loss_func=loss_fn,
                                       callbacks=[loss_fn.callback()])


@needs_transformers
def test_gradient_accumulation_equals_a_batch_twice_the_size(tmp_path):
    """One update of 2 x 4 accumulated equals one update of 8 (optimizer SGD,
    so the parameters move by the gradient itself)."""
    from wce_fairseq.integrations.hf import encouraging_loss_func

    params = []
    for bs, ga in ((8, 1), (4, 2)):
        model = _marian()
        fn = encouraging_loss_func(label_smoothing=0.1)
        _trainer(tmp_path / f"b{bs}", model, fn, per_device_train_batch_size=bs, gradient_accumulation_steps=ga,
                 max_steps=1, optim="sgd", learning_rate=1.0).train()
        params.append([p.detach().clone() for p in model.parameters()])
    start = [p.detach() for p in _marian().parameters()]
    moved = max(float((a - s).abs().max()) for a, s in zip(params[0], start))
    assert moved > 1e-3
    for a, b in zip(*params):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


@needs_transformers
def test_trainer_trains_logs_and_schedules(tmp_path):
    from wce_fairseq.integrations.hf import encouraging_loss_func

    fn = encouraging_loss_func(label_smoothing=0.1, bonus_schedule="linear")  # over the run's max_steps
    trainer = _trainer(tmp_path, _marian(), fn, max_steps=12, learning_rate=3e-3)
    trainer.train()
    logs = [r for r in trainer.state.log_history if "loss" in r and "train_runtime" not in r]
    assert len(logs) == 12
    assert logs[-1]["loss"] < logs[0]["loss"]
    # the weight trained with at step k (k updates applied before it) is k / 12
    assert [r["bonus_weight"] for r in logs] == [round(k / 12, 4) for k in range(12)]
    for key in ("target_prob", "well_classified", "margin", "bonus"):
        assert key in logs[-1]
    assert 0 < logs[-1]["target_prob"] < 1


@needs_transformers
def test_schedule_resumes_exactly_from_a_checkpoint(tmp_path):
    from wce_fairseq.integrations.hf import encouraging_loss_func

    def run(out, resume=None):
        fn = encouraging_loss_func(label_smoothing=0.1, bonus_schedule="cos", bonus_schedule_length=5)
        trainer = _trainer(out, _marian(), fn, save_strategy="steps", save_steps=3)
        trainer.train(resume_from_checkpoint=resume)
        return [r for r in trainer.state.log_history if "loss" in r and "train_runtime" not in r]

    full = run(tmp_path / "full")
    resumed = run(tmp_path / "full", resume=str(tmp_path / "full" / "checkpoint-3"))
    assert [r["step"] for r in resumed][-3:] == [4, 5, 6]
    for a, b in zip(full[3:], resumed[-3:]):
        assert a["step"] == b["step"] and a["bonus_weight"] == b["bonus_weight"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7)
    assert full[5]["bonus_weight"] == 1.0 and 0 < full[2]["bonus_weight"] < 1
