"""A synthetic parallel corpus that needs no download (quickstart and tests).

English-like sentences from a small grammar are "translated" into a made-up
language ("ps") by rules a Transformer has to learn: every word has its own
pseudo-word, adjectives follow their noun, the verb moves to the end of the
clause (SOV), determiners agree with a noun class, and plural nouns take a
class-dependent suffix. It is not a natural language; it is a deterministic,
learnable translation task whose BLEU moves within minutes on a CPU.

    python examples/quickstart/toy_corpus.py OUTDIR [--train 12000 --valid 400 --test 400 --seed 1]

writes OUTDIR/{train,valid,test}.{en,ps}.
"""
from __future__ import annotations

import argparse
import os
import random

NOUNS = ("cat dog bird house tree river city car book teacher student child doctor farmer king queen horse "
         "garden window door table letter song friend mother father boat mountain road village market "
         "apple bread flower stone ship forest lake").split()
VERBS = ("sees likes finds takes builds paints reads writes opens closes carries follows helps visits "
         "watches loves hates buys sells cleans").split()
ADJS = "big small old young red green happy sad quick slow bright dark tall short quiet".split()
PREPS = "near behind under above beside".split()
DETS = ("the", "a")
CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"


def _pseudo_word(word: str, rng: random.Random) -> str:
    n_syll = 1 + (len(word) > 4) + (len(word) > 6)
    return "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(n_syll)) + rng.choice(CONSONANTS)


def build_lexicon(seed: int = 1234):
    rng = random.Random(seed)
    lex, used = {}, set()
    for w in NOUNS + VERBS + ADJS + PREPS:
        while True:
            p = _pseudo_word(w, rng)
            if p not in used:
                break
        used.add(p)
        lex[w] = p
    noun_class = {n: i % 3 for i, n in enumerate(NOUNS)}
    return lex, noun_class


DET_PS = {("the", 0): "lo", ("the", 1): "la", ("the", 2): "li", ("a", 0): "un", ("a", 1): "una", ("a", 2): "uni"}
PLURAL_PS = ("es", "or", "im")


def _noun_phrase(rng, lex, cls):
    noun = rng.choice(NOUNS)
    plural = rng.random() < 0.3
    det = "the" if plural else rng.choice(DETS)
    adjs = rng.sample(ADJS, k=rng.choice((0, 0, 1, 1, 2)))
    en = [det] + adjs + [noun + ("s" if plural else "")]
    c = cls[noun]
    ps = [DET_PS[(det, c)], lex[noun] + (PLURAL_PS[c] if plural else "")] + [lex[a] for a in adjs]
    return en, ps


def sentence_pair(rng, lex, cls):
    s_en, s_ps = _noun_phrase(rng, lex, cls)
    o_en, o_ps = _noun_phrase(rng, lex, cls)
    verb = rng.choice(VERBS)
    en, ps = s_en + [verb] + o_en, s_ps + o_ps
    if rng.random() < 0.4:
        prep = rng.choice(PREPS)
        p_en, p_ps = _noun_phrase(rng, lex, cls)
        en += [prep] + p_en
        ps += [lex[prep]] + p_ps
    ps.append(lex[verb])  # verb-final
    if rng.random() < 0.25:
        s2, v2 = _noun_phrase(rng, lex, cls), rng.choice(VERBS)
        o2 = _noun_phrase(rng, lex, cls)
        en += ["and"] + s2[0] + [v2] + o2[0]
        ps += ["e"] + s2[1] + o2[1] + [lex[v2]]
    return " ".join(en) + " .", " ".join(ps) + " ."


def write_corpus(outdir: str, n_train: int = 12000, n_valid: int = 400, n_test: int = 400, seed: int = 1) -> dict:
    os.makedirs(outdir, exist_ok=True)
    lex, cls = build_lexicon()
    rng = random.Random(seed)
    seen, counts = set(), {}
    for split, n in (("test", n_test), ("valid", n_valid), ("train", n_train)):
        pairs = []
        while len(pairs) < n:
            en, ps = sentence_pair(rng, lex, cls)
            if en in seen:  # keep the splits disjoint
                continue
            seen.add(en)
            pairs.append((en, ps))
        for lang, i in (("en", 0), ("ps", 1)):
            with open(os.path.join(outdir, f"{split}.{lang}"), "w", encoding="utf-8") as f:
                f.writelines(p[i] + "\n" for p in pairs)
        counts[split] = len(pairs)
    return counts



def read(path):
    """The lines of one side of a split, without their line ends."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--train", type=int, default=12000)
    ap.add_argument("--valid", type=int, default=400)
    ap.add_argument("--test", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    print(write_corpus(a.outdir, a.train, a.valid, a.test, a.seed))


if __name__ == "__main__":
    main()
