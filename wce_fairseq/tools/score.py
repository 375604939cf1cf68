"""Scores of a decoded test set, the paper's way and the modern way.

* tokenised BLEU: BLEU4 over whitespace tokens of the hypotheses after BPE
  removal against the recipe's tokenised references, no smoothing, no further
  tokenisation or case folding -- what fairseq-generate prints as "BLEU4" and
  what the paper reports (on IWSLT'14 De->En that text is Moses-tokenised and
  lowercased);
* sacreBLEU on detokenised text against the untouched references, with its
  signature (``case:lc`` where the recipe's data is lowercased);
* chrF2 on the same detokenised text.

    python -m wce_fairseq.tools.score meta --bin DATA_BIN --lang en --remove-bpe subword_nmt --detok moses \\
        --lowercase 1 --ref-tok test=PATH --ref-detok test=PATH     # written by prepare.sh
    python -m wce_fairseq.tools.score generate --gen generate.txt --bin DATA_BIN --subset test --out DIR
"""
import argparse
import json
import os
import re
import sys

META = "wce_recipe.json"


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def tok_bleu_metric():
    from sacrebleu.metrics import BLEU

    # fairseq's BLEU scorer: corpus BLEU4 on whitespace tokens, no smoothing
    return BLEU(tokenize="none", smooth_method="none", force=True)


def detok_bleu_metric(lowercase):
    from sacrebleu.metrics import BLEU

    return BLEU(lowercase=lowercase)


def chrf_metric(lowercase):
    from sacrebleu.metrics import CHRF

    return CHRF(lowercase=lowercase)


def score_all(hyp_tok, ref_tok, hyp_detok, ref_detok, lowercase):
    """{'tok_bleu', 'sacrebleu', 'chrf', 'sacrebleu_signature', 'chrf_signature'};
    tok_bleu is None without tokenised references."""
    for h, r, what in ((hyp_tok, ref_tok, "tokenised"), (hyp_detok, ref_detok, "detokenised")):
        if r is not None and len(h) != len(r):
            raise ValueError(f"{what} hypotheses have {len(h)} lines, the references {len(r)}")
    res = {"tok_bleu": None}
    if ref_tok is not None:
        t = tok_bleu_metric().corpus_score(hyp_tok, [ref_tok])
        res["tok_bleu"] = t.score
        res["tok_bleu_detail"] = {"precisions": list(t.precisions), "sys_len": t.sys_len, "ref_len": t.ref_len}
    b, c = detok_bleu_metric(lowercase), chrf_metric(lowercase)
    res["sacrebleu"] = b.corpus_score(hyp_detok, [ref_detok]).score
    res["chrf"] = c.corpus_score(hyp_detok, [ref_detok]).score
    res["sacrebleu_signature"] = str(b.get_signature())
    res["chrf_signature"] = str(c.get_signature())
    return res


def read_meta(data_bin):
    path = os.path.join(data_bin, META)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    for key in ("ref_tok", "ref_detok"):  # stored relative to the data folder
        meta[key] = {s: os.path.normpath(os.path.join(data_bin, p)) for s, p in meta.get(key, {}).items()}
    return meta


# "Generate test with beam=5: BLEU4 = 35.09, 68.1/43.2/29.0/19.9 (BP=1.000, ratio=1.02, syslen=..., reflen=...)"
FAIRSEQ_BLEU = re.compile(r"BLEU4 = ([0-9.]+), ([0-9.]+)/([0-9.]+)/([0-9.]+)/([0-9.]+) \(BP=([0-9.]+), "
                          r"ratio=([0-9.]+), syslen=(\d+), reflen=(\d+)\)")


class IncompleteTranslation(ValueError):
    """fairseq-generate's output does not hold one translation per reference."""


def read_generate(path, prefix="H-"):
    """fairseq-generate's hypotheses by sentence id (``H-``, after BPE
    removal; ``D-`` for the detokenised ones), and its BLEU4 line as {"bleu",
    "precisions", "sys_len", "ref_len"} (None if absent)."""
    hyp, bleu = {}, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith(prefix):
                i, _score, *text = line.rstrip("\n").split("\t")
                hyp[int(i[len(prefix):])] = text[0] if text else ""
                continue
            m = FAIRSEQ_BLEU.search(line)
            if m:
                g = m.groups()
                bleu = {"bleu": float(g[0]), "precisions": [float(x) for x in g[1:5]], "sys_len": int(g[7]),
                        "ref_len": int(g[8])}
    return hyp, bleu


def translations(path, n_references, prefix="H-"):
    """The hypotheses of :func:`read_generate` in sentence order and the BLEU4
    line, refused unless there is exactly one hypothesis for each of the
    ``n_references`` sentences: fairseq-generate silently
    drops the last batch when it is smaller than
    ``--required-batch-size-multiple`` (8 by default), and a score over fewer
    sentences is another score."""
    hyp, bleu = read_generate(path, prefix)
    if set(hyp) != set(range(n_references)):
        missing = sorted(set(range(n_references)) - set(hyp))
        raise IncompleteTranslation(
            f"{path} translates {len(hyp)} of the {n_references} reference sentences (missing ids "
            f"{missing[:10]}{' ...' if len(missing) > 10 else ''}); fairseq-generate drops the last batch when "
            "it holds fewer sentences than --required-batch-size-multiple (8 by default): decode again with "
            "--required-batch-size-multiple 1, or check that the reference matches the subset")
    return [hyp[i] for i in range(n_references)], bleu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("meta", help="record how a data folder is to be scored")
    m.add_argument("--bin", required=True)
    m.add_argument("--lang", required=True)
    m.add_argument("--remove-bpe", required=True, choices=["subword_nmt", "sentencepiece"])
    m.add_argument("--detok", required=True, choices=["moses", "none"])
    m.add_argument("--lowercase", type=int, choices=[0, 1], required=True)
    m.add_argument("--pipeline", required=True)
    m.add_argument("--ref-tok", action="append", default=[], metavar="SUBSET=PATH")
    m.add_argument("--ref-detok", action="append", default=[], metavar="SUBSET=PATH")
    g = sub.add_parser("generate", help="score a fairseq-generate output")
    g.add_argument("--gen", required=True)
    g.add_argument("--bin", required=True)
    g.add_argument("--subset", default="test")
    g.add_argument("--out", required=True)
    g.add_argument("--ref-detok", help="override the detokenised reference file")
    g.add_argument("--label", default="")
    a = ap.parse_args(argv)
    if a.cmd == "meta":
        def rel(items):
            d = {}
            for it in items:
                subset, _, path = it.partition("=")
                if not path or not os.path.exists(path):
                    sys.exit(f"score meta: {it!r}: expected SUBSET=EXISTING_FILE")
                d[subset] = os.path.relpath(os.path.abspath(path), os.path.abspath(a.bin))
            return d
        meta = {"pipeline": a.pipeline, "lang": a.lang, "remove_bpe": a.remove_bpe, "detok": a.detok,
                "lowercase": bool(a.lowercase), "ref_tok": rel(a.ref_tok), "ref_detok": rel(a.ref_detok)}
        with open(os.path.join(a.bin, META), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
        return
    meta = read_meta(a.bin) or {"lang": "en", "detok": "none", "lowercase": False, "ref_tok": {}, "ref_detok": {},
                                "pipeline": "unknown"}
    ref_tok_path = meta["ref_tok"].get(a.subset)
    ref_detok_path = a.ref_detok or meta["ref_detok"].get(a.subset)
    if not ref_detok_path:
        sys.exit(f"score: no reference for subset {a.subset!r}: pass --ref-detok FILE "
                 f"(the data folder has no {META} entry for it)")
    ref_detok = read_lines(ref_detok_path)
    try:
        hyp_tok, fairseq_bleu = translations(a.gen, len(ref_detok))
    except IncompleteTranslation as e:
        sys.exit(f"score: {e}")
    if meta["detok"] == "moses":
        from sacremoses import MosesDetokenizer

        md = MosesDetokenizer(lang=meta["lang"])
        hyp_detok = [md.detokenize(h.split()) for h in hyp_tok]
    else:
        hyp_detok = list(hyp_tok)
    ref_tok = read_lines(ref_tok_path) if ref_tok_path else None
    res = score_all(hyp_tok, ref_tok, hyp_detok, ref_detok, meta["lowercase"])
    res["fairseq_generate_bleu4"] = fairseq_bleu
    os.makedirs(a.out, exist_ok=True)
    for name, lines in (("hyp.tok", hyp_tok), ("hyp.detok", hyp_detok)):
        with open(os.path.join(a.out, name), "w", encoding="utf-8") as f:
            f.writelines(x + "\n" for x in lines)
    info = {"ref_tok": os.path.abspath(ref_tok_path) if ref_tok_path else None,
            "ref_detok": os.path.abspath(ref_detok_path), "lowercase": meta["lowercase"], "subset": a.subset,
            "label": a.label, **res}
    with open(os.path.join(a.out, "scores.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    tb = "n/a (no tokenised references)" if res["tok_bleu"] is None else f"{res['tok_bleu']:.2f}"
    fb = "n/a" if fairseq_bleu is None else f"{fairseq_bleu['bleu']:.2f}"
    text = (f"{a.label}\n"
            f"tokenised BLEU (the paper's metric): {tb}\n"
            f"  fairseq-generate's own BLEU4: {fb}\n"
            f"sacreBLEU (detok): {res['sacrebleu']:.2f}\n  {res['sacrebleu_signature']}\n"
            f"chrF2: {res['chrf']:.2f}\n  {res['chrf_signature']}\n")
    with open(os.path.join(a.out, "scores.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
