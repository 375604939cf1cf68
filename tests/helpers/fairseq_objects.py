"""Tiny in-memory fairseq objects for criterion tests (no data on disk)."""
import argparse
import dataclasses

import torch


def make_task(vocab=23, **task_kw):
    from fairseq.data import Dictionary

    import wce_fairseq

    wce_fairseq.register()
    from wce_fairseq.tasks.translation_encouraging import TranslationEncouragingConfig, TranslationEncouragingTask

    d = Dictionary()
    for i in range(vocab):
        d.add_symbol(f"w{i}")
    cfg = TranslationEncouragingConfig(data="unused", source_lang="src", target_lang="tgt", **task_kw)
    return TranslationEncouragingTask(cfg, d, d)


def make_model(task, seed=0, adaptive=False):
    from fairseq.models.transformer import TransformerModel, base_architecture

    torch.manual_seed(seed)
    args = argparse.Namespace(
        encoder_layers=1, decoder_layers=1, encoder_embed_dim=16, decoder_embed_dim=16,
        encoder_ffn_embed_dim=32, decoder_ffn_embed_dim=32, encoder_attention_heads=2,
        decoder_attention_heads=2, share_all_embeddings=True, dropout=0.0, max_source_positions=64,
        max_target_positions=64,
    )
    if adaptive:
        args.adaptive_softmax_cutoff = "8,16"
        args.share_all_embeddings = False
        args.share_decoder_input_output_embed = False
    base_architecture(args)
    model = TransformerModel.build_model(args, task)
    model.eval()  # deterministic
    return model


def make_sample(task, lengths=(5, 3, 7), seed=1, pad_right=True):
    """A left-padded source / right-padded target batch as fairseq collates it."""
    g = torch.Generator().manual_seed(seed)
    d = task.tgt_dict
    pad, eos = d.pad(), d.eos()
    lo = d.nspecial
    B, T = len(lengths), max(lengths)
    src = torch.full((B, T), pad)
    tgt = torch.full((B, T), pad)
    prev = torch.full((B, T), pad)
    for i, n in enumerate(lengths):
        s = torch.randint(lo, len(d), (n,), generator=g)
        s[-1] = eos
        src[i, T - n:] = s
        t = torch.randint(lo, len(d), (n,), generator=g)
        t[-1] = eos
        tgt[i, :n] = t
        prev[i, 0] = eos
        prev[i, 1:n] = t[:-1]
    return {
        "id": torch.arange(B),
        "nsentences": B,
        "ntokens": int(sum(lengths)),
        "net_input": {"src_tokens": src, "src_lengths": torch.tensor(lengths), "prev_output_tokens": prev},
        "target": tgt,
    }


def make_criterion(task, name="encouraging_ce", **overrides):
    from fairseq.criterions import CRITERION_DATACLASS_REGISTRY, CRITERION_REGISTRY
    from omegaconf import OmegaConf

    dc = CRITERION_DATACLASS_REGISTRY[name]
    fields = {"label_smoothing": 0.1, **overrides}
    cfg = OmegaConf.structured(dc)
    for k, v in fields.items():
        cfg[k] = v
    cfg.sentence_avg = False
    if "cpu" in {f.name for f in dataclasses.fields(dc)}:  # fairseq fills it from --cpu
        cfg.cpu = True
    return CRITERION_REGISTRY[name].build_criterion(cfg, task)


def param_grads(loss, model):
    """d loss / d every parameter, zeros for parameters the loss does not use
    (fairseq 0.12.2's encoder layers hold copies that only its inference path reads)."""
    params = list(model.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
