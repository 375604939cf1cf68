"""SentencePiece from the command line (the pip wheel ships no spm_* binaries).

    python -m wce_fairseq_recipes.spm train --input a.txt,b.txt --prefix out/spm --vocab-size 8000
    python -m wce_fairseq_recipes.spm encode --model out/spm.model < in.txt > out.txt
    python -m wce_fairseq_recipes.spm decode --model out/spm.model < in.txt > out.txt
    python -m wce_fairseq_recipes.spm encode-pair --model out/spm.model --inputs a.fr a.en --outputs b.fr b.en \
        --min-len 1 --max-len 250    # drop pairs with a side outside [min, max] pieces (fairseq's spm_encode.py)
"""
import argparse
import os
import random
import sys
import tempfile


def sample_lines(paths, k, seed, out_path):
    """At most ``k`` non-empty lines of ``paths``, a uniform sample drawn with
    ``seed`` (reservoir sampling: one pass, memory for ``k`` lines), in their
    original order. Returns the number written."""
    rng = random.Random(seed)
    keep = []  # (position, line)
    seen = 0
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                if len(keep) < k:
                    keep.append((seen, line))
                else:
                    j = rng.randrange(seen + 1)
                    if j < k:
                        keep[j] = (seen, line)
                seen += 1
    keep.sort()
    with open(out_path, "w", encoding="utf-8") as f:
        f.writelines(line if line.endswith("\n") else line + "\n" for _, line in keep)
    return len(keep)


def main(argv=None):
    import sentencepiece as spm

    ap = argparse.ArgumentParser(description="SentencePiece train / encode / decode")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--input", required=True, help="comma-separated text files")
    t.add_argument("--prefix", required=True)
    t.add_argument("--vocab-size", type=int, required=True)
    t.add_argument("--model-type", default="unigram", choices=["unigram", "bpe"])
    t.add_argument("--character-coverage", type=float, default=1.0)
    t.add_argument("--max-sentences", type=int, default=2_000_000, help="sample at most this many lines")
    t.add_argument("--seed", type=int, default=1, help="seed of the line sample (the same lines every run)")
    for name in ("encode", "decode"):
        e = sub.add_parser(name)
        e.add_argument("--model", required=True)
    p = sub.add_parser("encode-pair")
    p.add_argument("--model", required=True)
    p.add_argument("--inputs", nargs=2, required=True)
    p.add_argument("--outputs", nargs=2, required=True)
    p.add_argument("--min-len", type=int, default=1)
    p.add_argument("--max-len", type=int, default=250)
    a = ap.parse_args(argv)
    if a.cmd == "train":
        # SentencePiece's own line sample differs from run to run whatever its
        # seed; sample here (seeded), and let it train on all of the sample.
        with tempfile.TemporaryDirectory() as tmp:
            sample = os.path.join(tmp, "sample.txt")
            n = sample_lines(a.input.split(","), a.max_sentences, a.seed, sample)
            spm.SentencePieceTrainer.train(
                input=sample, model_prefix=a.prefix, vocab_size=a.vocab_size, model_type=a.model_type,
                character_coverage=a.character_coverage, hard_vocab_limit=False, minloglevel=2,
            )
        print(f"[spm] trained {a.prefix}.model on {n} lines (seed {a.seed})", file=sys.stderr)
        return
    sp = spm.SentencePieceProcessor(model_file=a.model)
    if a.cmd == "encode-pair":
        kept = total = 0
        with open(a.inputs[0], encoding="utf-8") as f0, open(a.inputs[1], encoding="utf-8") as f1, \
                open(a.outputs[0], "w", encoding="utf-8") as o0, open(a.outputs[1], "w", encoding="utf-8") as o1:
            for x, y in zip(f0, f1):
                total += 1
                px, py = (sp.encode(s.rstrip("\n"), out_type=str) for s in (x, y))
                if all(a.min_len <= len(p_) <= a.max_len for p_ in (px, py)):
                    o0.write(" ".join(px) + "\n")
                    o1.write(" ".join(py) + "\n")
                    kept += 1
            if f0.readline() or f1.readline():
                sys.exit(f"spm encode-pair: {a.inputs[0]} and {a.inputs[1]} differ in length")
        print(f"[spm] kept {kept} of {total} pairs ({a.min_len}..{a.max_len} pieces a side)", file=sys.stderr)
        return
    out = sys.stdout
    for line in sys.stdin:
        line = line.rstrip("\n")
        if a.cmd == "encode":
            out.write(" ".join(sp.encode(line, out_type=str)) + "\n")
        else:
            out.write(sp.decode(line.split()) + "\n")


if __name__ == "__main__":
    main()
