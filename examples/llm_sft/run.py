"""Fine-tune a tiny decoder-only (Llama-shaped) model to translate, with TRL's
SFTTrainer and the encouraging loss, offline: prompt -> translation pairs
from the quickstart's synthetic corpus, the prompt masked out of the loss,
greedy decoding of the test set, sacreBLEU and chrF. Label-smoothed CE (the
same loss at bonus weight 0) and EL side by side.

    scripts/setup_env.sh --hf                      # transformers, TRL, peft (keeps the pinned torch)
    .venv/bin/python examples/llm_sft/run.py [--epochs 3] [--train-size 6000] [--out runs/llm_sft]

The model is built from a config and its tokenizer (byte-pair, 600 pieces)
is trained on the spot: nothing is downloaded. The line a Trainer needs is
in ``train`` below: ``use_encouraging_loss(trainer, label_smoothing=0.1,
log_end=0.5)``.
"""
import argparse
import importlib.util
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)  # the package from this checkout, installed or not
sys.path.insert(0, os.path.join(REPO, "examples", "quickstart"))  # toy_corpus.py, the synthetic corpus

from toy_corpus import read, write_corpus  # noqa: E402

PROMPT = "translate: {} =>"


def stage(i, n, msg):
    print(f"[{i}/{n}] {msg}", flush=True)


def need_hf_stack():
    missing = [m for m in ("transformers", "trl", "datasets") if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"llm_sft: {', '.join(missing)} not installed; run scripts/setup_env.sh --hf (or pip install -e "
                 "\".[trl]\") first")


def toy_corpus(out, n_train, seed):
    raw = os.path.join(out, "raw")
    write_corpus(raw, n_train, 200, 200, seed=seed)
    return raw


def tokenizer(raw, out):
    """A byte-pair tokenizer trained on both sides of the training text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "<s>", "</s>", "<unk>"])
    tok.train([f"{raw}/train.en", f"{raw}/train.ps"], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    fast.save_pretrained(os.path.join(out, "tokenizer"))
    return fast


def model(tok, seed):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def train(name, bonus_weight, tok, data, a, out):
    import torch
    from trl import SFTConfig, SFTTrainer

    from wce_fairseq.integrations.hf import use_encouraging_loss

    args = SFTConfig(
        output_dir=os.path.join(out, name), report_to=[], use_cpu=not torch.cuda.is_available(), bf16=False,
        per_device_train_batch_size=64, learning_rate=3e-3, lr_scheduler_type="cosine", warmup_steps=50,
        num_train_epochs=a.epochs, logging_steps=25, save_strategy="no", seed=a.seed, dataloader_num_workers=0,
        disable_tqdm=True, max_length=96, completion_only_loss=True, max_grad_norm=1.0)
    trainer = SFTTrainer(model=model(tok, a.seed), args=args, processing_class=tok, train_dataset=data)
    use_encouraging_loss(trainer, label_smoothing=0.1, log_end=0.5, bonus_weight=bonus_weight)
    t0 = time.time()
    trainer.train()
    logs = [r for r in trainer.state.log_history if "target_prob" in r]
    last = (f"; last log: loss {logs[-1]['loss']:.3f}, token accuracy {logs[-1]['mean_token_accuracy']:.3f}, "
            f"target_prob {logs[-1]['target_prob']:.3f}, margin {logs[-1]['margin']:.2f}") if logs else ""
    print(f"   {name}: {trainer.state.global_step} updates in {time.time() - t0:.0f} s{last}", flush=True)
    return trainer.model


def translate(m, tok, sources, batch=64, max_new_tokens=64):
    """Greedy decoding, prompts padded on the left."""
    import torch

    m.eval()
    tok.padding_side = "left"
    hyps = []
    with torch.no_grad():
        for i in range(0, len(sources), batch):
            enc = tok([PROMPT.format(s) for s in sources[i: i + batch]], return_tensors="pt", padding=True)
            ids = m.generate(**enc.to(m.device), do_sample=False, max_new_tokens=max_new_tokens,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            hyps += [tok.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=True).strip() for row in ids]
    return hyps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(REPO, "runs", "llm_sft"))
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--train-size", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    need_hf_stack()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets
    import sacrebleu

    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    n = 4
    stage(1, n, f"synthetic corpus (en -> ps, {a.train_size} pairs) and a byte-pair tokenizer, in {out}")
    raw = toy_corpus(out, a.train_size, a.seed)
    tok = tokenizer(raw, out)
    src, tgt = read(f"{raw}/train.en"), read(f"{raw}/train.ps")
    data = datasets.Dataset.from_dict({"prompt": [PROMPT.format(s) for s in src], "completion": [" " + t for t in tgt]})
    stage(2, n, "SFTTrainer (the prompt masked out of the loss) + use_encouraging_loss: LS-CE (bonus weight 0), EL")
    models = {name: train(name, rho, tok, data, a, out) for name, rho in (("LS-CE", 0.0), ("EL", 1.0))}
    stage(3, n, "greedy decoding of the test set")
    test_src, ref = read(f"{raw}/test.en"), read(f"{raw}/test.ps")
    hyps = {name: translate(m, tok, test_src) for name, m in models.items()}
    stage(4, n, "sacreBLEU and chrF2")
    print(f"   {'system':<6} {'BLEU':>6} {'chrF2':>6}")
    for name, h in hyps.items():
        # the synthetic corpus is tokenised by construction ("... ."): sacreBLEU's warning about it does not apply
        bleu = sacrebleu.corpus_bleu(h, [ref], force=True)
        chrf = sacrebleu.corpus_chrf(h, [ref])
        print(f"   {name:<6} {bleu.score:>6.2f} {chrf.score:>6.2f}")
        with open(os.path.join(out, f"{name}.hyp"), "w", encoding="utf-8") as f:
            f.writelines(x + "\n" for x in h)
    print("   (one seed on a synthetic task: a check of the pipeline, not evidence for or against EL)")


if __name__ == "__main__":
    main()
