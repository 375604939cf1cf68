"""integrations/hf/trainer.py and callback.py: the loss inside Hugging Face
Trainers (use_encouraging_loss, and compute_loss_func + callback), with tiny
Llama-, Qwen2-, GPT-2-, Marian- and T5-shaped models built from configs.
Optimiser SGD at lr 1, so parameters move by the gradient itself."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from tests.helpers import hf_models as H  # noqa: E402
from tests.helpers.reference import el_reference  # noqa: E402
from wce_fairseq.integrations.hf import encouraging_loss_func, use_encouraging_loss  # noqa: E402
from wce_fairseq.ops.bonus import ELConfigError  # noqa: E402


def _train_own_and_ours(kind, tmp_path, setup, own_kw=(), **kw):
    """The same run twice: the model's own loss (with ``own_kw`` on top), and
    ours set up by ``setup(trainer)``."""
    runs = []
    for name in ("own", "ours"):
        t = H.trainer(kind, tmp_path / name, **{**kw, **(dict(own_kw) if name == "own" else {})})
        if name == "ours":
            setup(t)
        t.train()
        runs.append((H.losses(t), H.params(t.model)))
    return runs


@pytest.mark.parametrize("kind", H.SHAPES)
def test_weight_zero_equals_the_model_s_own_loss_with_gradient_accumulation(kind, tmp_path):
    """ρ = 0, ε = 0 and use_encouraging_loss, two updates of 2 x 4
    accumulated: the logged losses and parameters of the model's own loss on
    batches of 8 (the seq2seq models' own loss averages each micro-batch, so
    accumulating it is not the loss of the whole batch: the comparison is with
    one batch of 8, the same 8 sentences)."""
    (own, p_own), (ours, p_ours) = _train_own_and_ours(
        kind, tmp_path, lambda t: use_encouraging_loss(t, bonus_weight=0.0), gradient_accumulation_steps=2,
        own_kw=dict(gradient_accumulation_steps=1, per_device_train_batch_size=8))
    assert len(own) == len(ours) == 2
    assert ours == pytest.approx(own, rel=1e-5, abs=1e-6)
    start = H.params(H.model(kind))
    assert max(float((p_own[k] - start[k]).abs().max()) for k in start) > 1e-3  # it trained
    for k in p_own:
        torch.testing.assert_close(p_ours[k], p_own[k], rtol=1e-5, atol=1e-6)


def test_compute_loss_func_and_callback_shift_a_causal_lm_by_default(tmp_path):
    """The Trainer's own hooks (no use_encouraging_loss): the callback decides
    the shift from the model, so a causal LM's loss is its own at ρ = 0."""
    def with_hooks(t):
        fn = encouraging_loss_func(bonus_weight=0.0)
        t.compute_loss_func = fn
        t.add_callback(fn.callback())

    (own, p_own), (ours, p_ours) = _train_own_and_ours("llama", tmp_path, with_hooks)
    assert ours == pytest.approx(own, rel=1e-5, abs=1e-6)
    for k in p_own:
        torch.testing.assert_close(p_ours[k], p_own[k], rtol=1e-5, atol=1e-6)


def test_trainer_trains_logs_and_schedules(tmp_path):
    t = H.trainer("marian", tmp_path, max_steps=12, learning_rate=3e-3, optim="adamw_torch", n=48)
    fn = use_encouraging_loss(t, label_smoothing=0.1, bonus_schedule="linear")  # over the run's max_steps
    t.train()
    logs = [r for r in t.state.log_history if "loss" in r and "train_runtime" not in r]
    assert len(logs) == 12
    # the weight trained with at step k (k updates applied before it) is k / 12
    assert [r["bonus_weight"] for r in logs] == [round(k / 12, 4) for k in range(12)]
    assert fn.bonus_weight_now == 11 / 12
    for key in ("target_prob", "well_classified", "margin", "bonus"):
        assert key in logs[-1]


def test_schedule_resumes_exactly_from_a_checkpoint(tmp_path):
    def run(resume=None):
        t = H.trainer("marian", tmp_path / "run", max_steps=6, learning_rate=3e-3, optim="adamw_torch", n=48,
                      save_strategy="steps", save_steps=3)
        use_encouraging_loss(t, label_smoothing=0.1, bonus_schedule="cos", bonus_schedule_length=5)
        t.train(resume_from_checkpoint=resume)
        return [r for r in t.state.log_history if "loss" in r and "train_runtime" not in r]

    full = run()
    resumed = run(resume=str(tmp_path / "run" / "checkpoint-3"))
    assert [r["step"] for r in resumed][-3:] == [4, 5, 6]
    for a, b in zip(full[3:], resumed[-3:]):
        assert a["step"] == b["step"] and a["bonus_weight"] == b["bonus_weight"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7)
    # cos schedule over 5 updates, as written in docs/design.md: (cos(π(1 + k/5)) + 1) / 2
    import math
    assert [r["bonus_weight"] for r in full] == [round((math.cos(math.pi * (1 + min(k / 5, 1))) + 1) / 2, 4)
                                                 for k in range(6)]


def test_a_schedule_with_no_progress_fed_fails_at_the_first_step(tmp_path):
    fn = encouraging_loss_func(bonus_schedule="linear", bonus_schedule_length=10, shift_labels=True)
    t = H.trainer("llama", tmp_path, compute_loss_func=fn)  # no callback: nothing tells it the progress
    with pytest.raises(RuntimeError, match=r"callbacks=\[loss_fn.callback\(\)\]"):
        t.train()
    assert t.state.global_step == 0


def test_label_smoothing_factor_beside_the_loss_is_refused(tmp_path):
    t = H.trainer("llama", tmp_path, label_smoothing_factor=0.1)
    with pytest.raises(ELConfigError, match="label_smoothing_factor=0.1 .* label_smoothing=0.1"):
        use_encouraging_loss(t)
    fn = encouraging_loss_func()
    with pytest.raises(ELConfigError, match="label_smoothing_factor"):  # the hooks' way: when the Trainer is made
        H.trainer("llama", tmp_path, label_smoothing_factor=0.1, compute_loss_func=fn, callbacks=[fn.callback()])


def test_a_second_loss_is_refused(tmp_path):
    t = H.trainer("llama", tmp_path)
    use_encouraging_loss(t)
    with pytest.raises(ELConfigError, match="already has a compute_loss_func"):
        use_encouraging_loss(t)


def _eval_rows(kind, n=4, seed=5):
    return H.Rows(kind, n, seed)


def test_predict_with_generate_evaluates_with_the_encouraging_loss(tmp_path):
    """Seq2SeqTrainer generating: eval_loss is the encouraging loss of the
    evaluation batch (its float64 reference), with its diagnostics; the hooks'
    way, which cannot reach that path, is refused."""
    m = H.model("marian")
    rows = _eval_rows("marian")
    t = H.trainer("marian", tmp_path, m=m, predict_with_generate=True, generation_max_length=12)
    use_encouraging_loss(t, label_smoothing=0.1, log_end=0.75)
    metrics = t.evaluate(eval_dataset=rows)
    b = rows.b
    with torch.no_grad():
        logits = m(**{k: v for k, v in b.items() if k != "labels"}).logits
    ref = el_reference(logits, b["labels"], label_smoothing=0.1, log_end=0.75)[0]
    assert metrics["eval_loss"] == pytest.approx(float(ref.sum() / (b["labels"] != -100).sum()), rel=1e-5)
    assert 0 <= metrics["eval_target_prob"] <= 1 and "eval_margin" in metrics
    fn = encouraging_loss_func()
    with pytest.raises(ELConfigError, match="predict_with_generate"):
        H.trainer("marian", tmp_path / "hooks", predict_with_generate=True, compute_loss_func=fn,
                  callbacks=[fn.callback()])


def _with_hooks(kind, out, **kw):
    """A Trainer given the loss the Trainer's own way: compute_loss_func and callbacks."""
    options = {k: kw.pop(k) for k in list(kw) if k.startswith("bonus") or k in ("label_smoothing", "shift_labels")}
    fn = encouraging_loss_func(**options)
    return H.trainer(kind, out, compute_loss_func=fn, callbacks=[fn.callback()], **kw), fn


def test_prediction_and_evaluation_keep_separate_diagnostics(tmp_path):
    t, _ = _with_hooks("llama", tmp_path, label_smoothing=0.1, shift_labels=True)
    a, b = _eval_rows("llama", seed=5), _eval_rows("llama", seed=6)
    alone = t.evaluate(eval_dataset=b)
    pred = t.predict(a)
    after = t.evaluate(eval_dataset=b)
    keys = ("eval_target_prob", "eval_well_classified", "eval_margin", "eval_bonus")
    assert [after[k] for k in keys] == [alone[k] for k in keys]
    # prediction's own diagnostics: the margin (target logit minus the best other) over a's scored tokens
    with torch.no_grad():
        logits = t.model(**{k: v for k, v in a.b.items() if k != "labels"}).logits[:, :-1]
    labels = a.b["labels"][:, 1:]
    z, y = logits[labels != -100].double(), labels[labels != -100]
    margin = z.gather(1, y[:, None]).squeeze(1) - z.scatter(1, y[:, None], float("-inf")).amax(1)
    assert pred.metrics["test_margin"] == round(float(margin.mean()), 4) != alone["eval_margin"]


def test_epoch_schedule_spans_the_real_number_of_epochs(tmp_path):
    """max_steps = 16 updates of a 4-update epoch: 4 epochs (num_train_epochs
    is 3 and does not count), so ρ is 0, 1/4, 2/4, 3/4 over them."""
    t, _ = _with_hooks("llama", tmp_path, max_steps=16, num_train_epochs=3, bonus_schedule="linear",
                       bonus_schedule_unit="epoch", shift_labels=True)
    t.train()
    weights = [r["bonus_weight"] for r in t.state.log_history if "loss" in r and "train_runtime" not in r]
    assert weights == [0.0] * 4 + [0.25] * 4 + [0.5] * 4 + [0.75] * 4


def test_a_seq2seq_batch_without_decoder_inputs_names_the_collator(tmp_path):
    rows = H.Rows("marian", 16)
    del rows.b["decoder_input_ids"]
    t = transformers.Seq2SeqTrainer(model=H.model("marian"), args=H.arguments(tmp_path), train_dataset=rows)
    use_encouraging_loss(t)
    with pytest.raises(ValueError, match=r"DataCollatorForSeq2Seq\(tokenizer, model=model\)"):
        t.train()
