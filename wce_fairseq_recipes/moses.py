"""The Moses steps of fairseq's IWSLT'14 preparation, in Python (sacremoses
stands in for the Perl scripts).

    python -m wce_fairseq_recipes.moses tok -l de [--lowercase] [--workers 2] < in > out   # tokenizer.perl [| lowercase.perl]
    python -m wce_fairseq_recipes.moses lc < in > out                                        # lowercase.perl
    python -m wce_fairseq_recipes.moses detok -l en < in > out                               # detokenizer.perl
    python -m wce_fairseq_recipes.moses clean CORPUS L1 L2 OUT MIN MAX [--ratio 1.5]         # clean-corpus-n.perl
"""
import argparse
import functools
import re
import sys

_TOK = {}
_FINAL_DOT = re.compile(r"^(\S+)\.$")


def _tokenizer(lang):
    if lang not in _TOK:
        from sacremoses import MosesTokenizer

        class Tokenizer(MosesTokenizer):
            # tokenizer.perl since 2018-11 (mosesdecoder 9fc964d, "split final
            # dots unconditionally"): a period ending the line's last word is
            # split off even after a non-breaking prefix ("etc." -> "etc .").
            # sacremoses keeps the older rule; every IWSLT'14 preparation run
            # since then cloned the newer script.
            def handles_nonbreaking_prefixes(self, text):
                tokens = super().handles_nonbreaking_prefixes(text).split(" ")
                m = _FINAL_DOT.match(tokens[-1]) if tokens else None
                if m:
                    tokens[-1] = m.group(1) + " ."
                return " ".join(tokens)

        _TOK[lang] = Tokenizer(lang=lang)
    return _TOK[lang]


def tokenize(line, lang, lowercase=False):
    # tokenizer.perl's defaults: XML-escape special characters (& < > ' " | [ ]),
    # no aggressive hyphen splitting
    out = _tokenizer(lang).tokenize(line, escape=True, return_str=True, aggressive_dash_splits=False)
    return out.lower() if lowercase else out


def _tok_batch(args):
    lines, lang, lowercase = args
    return [tokenize(x, lang, lowercase) for x in lines]


_WS = re.compile(r"\s+")


@functools.lru_cache(maxsize=None)
def _too_long(max_word_length):  # compiled once, not per line pair
    return re.compile(r"[^\s|]{%d}" % (max_word_length + 1))


def clean_pair(f, e, lo, hi, ratio, factored=False, max_word_length=1000):
    """One line pair through clean-corpus-n.perl: the cleaned pair, or None
    when the script drops it. Pipes are removed unless the corpus is factored
    (decided on its first line), whitespace is collapsed, and a pair goes when
    a side is empty, has fewer than ``lo`` or more than ``hi`` words, when one
    side has more than ``ratio`` times the other's words, or when a word is
    longer than ``max_word_length`` characters."""
    out = []
    for s in (f, e):
        if not factored:
            s = s.replace("|", "")
        s = _WS.sub(" ", s)
        if s.startswith(" "):
            s = s[1:]
        if s.endswith(" "):
            s = s[:-1]
        if s == "":
            return None
        out.append(s)
    fc, ec = (len(s.split(" ")) for s in out)
    if ec > hi or fc > hi or ec < lo or fc < lo:
        return None
    if ec / fc > ratio or fc / ec > ratio:
        return None
    too_long = _too_long(max_word_length)
    if any(too_long.search(s) for s in out):
        return None
    return out[0], out[1]


def clean_corpus(corpus, l1, l2, out, lo, hi, ratio):
    kept = total = 0
    with open(f"{corpus}.{l1}", encoding="utf-8") as F, open(f"{corpus}.{l2}", encoding="utf-8") as E, \
            open(f"{out}.{l1}", "w", encoding="utf-8") as FO, open(f"{out}.{l2}", "w", encoding="utf-8") as EO:
        factored = None
        for f in F:
            e = E.readline()
            if e == "":
                sys.exit(f"clean: {corpus}.{l2} is too short")
            f, e = f.rstrip("\n"), e.rstrip("\n")
            total += 1
            if factored is None:
                factored = "|" in f or "|" in e
            pair = clean_pair(f, e, lo, hi, ratio, factored)
            if pair is None:
                continue
            FO.write(pair[0] + "\n")
            EO.write(pair[1] + "\n")
            kept += 1
        if E.readline() != "":
            sys.exit(f"clean: {corpus}.{l2} is too long")
    return kept, total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tok")
    t.add_argument("-l", "--lang", required=True)
    t.add_argument("--lowercase", action="store_true")
    t.add_argument("--workers", type=int, default=1)
    d = sub.add_parser("detok")
    d.add_argument("-l", "--lang", required=True)
    sub.add_parser("lc")
    c = sub.add_parser("clean")
    for name in ("corpus", "l1", "l2", "out"):
        c.add_argument(name)
    c.add_argument("min", type=int)
    c.add_argument("max", type=int)
    c.add_argument("--ratio", type=float, default=9.0)
    a = ap.parse_args(argv)
    out = sys.stdout
    if a.cmd == "clean":
        kept, total = clean_corpus(a.corpus, a.l1, a.l2, a.out, a.min, a.max, a.ratio)
        print(f"[clean] input sentences: {total}, output sentences: {kept}", file=sys.stderr)
    elif a.cmd == "lc":
        for line in sys.stdin:
            out.write(line.lower())
    elif a.cmd == "detok":
        from sacremoses import MosesDetokenizer

        md = MosesDetokenizer(lang=a.lang)
        for line in sys.stdin:
            out.write(md.detokenize(line.split()) + "\n")
    else:
        lines = [line.rstrip("\n") for line in sys.stdin]
        batches = [(lines[i:i + 2000], a.lang, a.lowercase) for i in range(0, len(lines), 2000)]
        if a.workers > 1 and len(batches) > 1:
            from multiprocessing import Pool

            with Pool(a.workers) as pool:
                results = pool.imap(_tok_batch, batches)
                for i, batch in enumerate(results, 1):
                    out.writelines(x + "\n" for x in batch)
                    print(f"\r[tok {a.lang}] {min(i * 2000, len(lines))}/{len(lines)} lines", end="",
                          file=sys.stderr)
        else:
            for i, b in enumerate(batches, 1):
                out.writelines(x + "\n" for x in _tok_batch(b))
                print(f"\r[tok {a.lang}] {min(i * 2000, len(lines))}/{len(lines)} lines", end="", file=sys.stderr)
        print(file=sys.stderr)


if __name__ == "__main__":
    main()
