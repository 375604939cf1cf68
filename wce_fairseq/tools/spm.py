"""SentencePiece from the command line (the pip wheel ships no spm_* binaries).

    python -m wce_fairseq.tools.spm train --input a.txt,b.txt --prefix out/spm --vocab-size 8000
    python -m wce_fairseq.tools.spm encode --model out/spm.model < in.txt > out.txt
    python -m wce_fairseq.tools.spm decode --model out/spm.model < in.txt > out.txt
"""
import argparse
import sys


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
    for name in ("encode", "decode"):
        e = sub.add_parser(name)
        e.add_argument("--model", required=True)
    a = ap.parse_args(argv)
    if a.cmd == "train":
        spm.SentencePieceTrainer.train(
            input=a.input, model_prefix=a.prefix, vocab_size=a.vocab_size, model_type=a.model_type,
            character_coverage=a.character_coverage, hard_vocab_limit=False,
            input_sentence_size=a.max_sentences, shuffle_input_sentence=True, minloglevel=2,
        )
        print(f"[spm] trained {a.prefix}.model", file=sys.stderr)
        return
    sp = spm.SentencePieceProcessor(model_file=a.model)
    out = sys.stdout
    for line in sys.stdin:
        line = line.rstrip("\n")
        if a.cmd == "encode":
            out.write(" ".join(sp.encode(line, out_type=str)) + "\n")
        else:
            out.write(sp.decode(line.split()) + "\n")


if __name__ == "__main__":
    main()
