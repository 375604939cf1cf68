"""Tiny Hugging Face models built from configs (no download), their batches
and datasets, and a Trainer around them, for tests/integrations/."""
import torch

V = 300
PAD, BOS, EOS = 0, 1, 2
CAUSAL = ("llama", "qwen2", "gpt2")
SEQ2SEQ = ("marian", "t5")
SHAPES = CAUSAL + SEQ2SEQ


def config(kind, **overrides):
    import transformers as t

    ids = dict(pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)
    small = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=1, max_position_embeddings=64, **ids)
    made = {
        "llama": lambda: t.LlamaConfig(tie_word_embeddings=False, **small),
        "qwen2": lambda: t.Qwen2Config(tie_word_embeddings=True, **small),
        "gpt2": lambda: t.GPT2Config(vocab_size=V, n_embd=32, n_layer=1, n_head=2, n_positions=64, resid_pdrop=0.0,
                                     embd_pdrop=0.0, attn_pdrop=0.0, **ids),
        "marian": lambda: t.MarianConfig(
            vocab_size=V, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
            pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD, forced_eos_token_id=EOS, dropout=0.0,
            attention_dropout=0.0, activation_dropout=0.0),
        "t5": lambda: t.T5Config(vocab_size=V, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_decoder_layers=1,
                                 num_heads=2, dropout_rate=0.0, pad_token_id=PAD, eos_token_id=EOS,
                                 decoder_start_token_id=PAD),
        "gemma2": lambda: t.Gemma2Config(head_dim=16, **small),
    }[kind]()
    for k, v in overrides.items():
        setattr(made, k, v)
    return made


def model(kind, seed=0, **overrides):
    import transformers as t

    torch.manual_seed(seed)
    cfg = config(kind, **overrides)
    if kind in SEQ2SEQ:
        m = (t.MarianMTModel if kind == "marian" else t.T5ForConditionalGeneration)(cfg)
        if kind == "marian":  # a bias after the projection, as trained Marian models have
            m.final_logits_bias.normal_(0, 0.5)
    else:
        m = t.AutoModelForCausalLM.from_config(cfg)
    return m.eval()


def batch(kind, n, seed=1, length=9):
    """A padded batch: a causal LM's prompt and padding labelled −100; a
    seq2seq batch with its decoder inputs (the labels shifted right)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (n, length), generator=g)
    lengths = torch.randint(length // 2, length + 1, (n,), generator=g)
    lengths[0] = length
    real = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    if kind in CAUSAL:
        ids = torch.where(real, ids, PAD)
        labels = torch.where(real, ids, -100)
        labels[:, :2] = -100  # a two-token prompt
        return {"input_ids": ids, "attention_mask": real.long(), "labels": labels}
    src = torch.randint(3, V, (n, length), generator=g)
    labels = torch.where(real, ids, -100)
    dec = torch.cat([torch.full((n, 1), PAD), labels[:, :-1].clamp_min(PAD)], 1)
    return {"input_ids": src, "attention_mask": torch.ones_like(src), "decoder_input_ids": dec, "labels": labels}


class Rows(torch.utils.data.Dataset):
    def __init__(self, kind, n, seed=1):
        self.b = batch(kind, n, seed)

    def __len__(self):
        return len(self.b["input_ids"])

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.b.items()}


def arguments(out, **kw):
    import transformers

    args = dict(output_dir=str(out), report_to=[], use_cpu=True, per_device_train_batch_size=4,
                per_device_eval_batch_size=4, learning_rate=1.0, optim="sgd", max_steps=2, logging_steps=1,
                save_strategy="no", seed=3, dataloader_num_workers=0, disable_tqdm=True,
                lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=0.0, remove_unused_columns=False)
    args.update(kw)
    return transformers.Seq2SeqTrainingArguments(**args)  # a TrainingArguments that Seq2SeqTrainer takes too


def trainer(kind, out, m=None, n=16, train_seed=1, trainer_cls=None, **kw):
    import transformers

    cls = trainer_cls or (transformers.Seq2SeqTrainer if kind in SEQ2SEQ else transformers.Trainer)
    extra = {k: kw.pop(k) for k in ("compute_loss_func", "callbacks", "eval_dataset") if k in kw}
    return cls(model=m if m is not None else model(kind), args=arguments(out, **kw),
               train_dataset=Rows(kind, n, train_seed), **extra)


def losses(trainer):
    return [r["loss"] for r in trainer.state.log_history if "loss" in r and "train_runtime" not in r]


def params(m):
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def word_tokenizer(words=None):
    """A word-level tokenizer built here (no download): ids 0-2 are <pad>,
    <s>, </s>, then one id per word, V ids in all."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = words or [f"w{i}" for i in range(V - 3)]
    vocab = {"<pad>": PAD, "<s>": BOS, "</s>": EOS, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def prompt_completion(n, seed=1):
    """Prompt -> completion pairs of random words ("translate: w5 w9 =>" -> "w9 w5")."""
    g = torch.Generator().manual_seed(seed)
    rows = {"prompt": [], "completion": []}
    for _ in range(n):
        k = int(torch.randint(2, 6, (1,), generator=g))
        src = [f"w{int(i)}" for i in torch.randint(0, V - 3, (k,), generator=g)]
        rows["prompt"].append("w0 " + " ".join(src) + " w1")
        rows["completion"].append(" " + " ".join(reversed(src)))
    return rows
