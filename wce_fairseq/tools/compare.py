"""Compare two systems over several seeds: sacreBLEU (detokenised, with its
signature) and chrF per seed, mean ± std, and sacreBLEU's paired bootstrap
test between the systems, seed by seed.

    python -m wce_fairseq.tools.compare --ref test.en \
        --baseline base.s1.txt base.s2.txt ... --system el.s1.txt el.s2.txt ... \
        [--names LS-CE EL] [--bootstrap 1000] [--json out.json]

Hypothesis files are paired with each other in the order given (seed i of the
baseline with seed i of the system).
"""
import argparse
import json
import statistics
import sys


def _read(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def paired_bootstrap(ref, base, system, n_samples=1000, seed=12345):
    """p-value of "system is not better than base" under sacreBLEU's paired
    bootstrap resampling (its own implementation)."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    named = [("baseline", base), ("system", system)]
    test = PairedTest(named, {"BLEU": BLEU()}, references=[ref], test_type="bs", n_samples=n_samples)
    _, scores = test()  # {"System": [...], "BLEU": [result_baseline, result_system]}
    res = scores["BLEU"][1]
    return getattr(res, "p_value", None)


def main(argv=None):
    from sacrebleu.metrics import BLEU, CHRF

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True)
    ap.add_argument("--baseline", nargs="+", required=True)
    ap.add_argument("--system", nargs="+", required=True)
    ap.add_argument("--names", nargs=2, default=["LS-CE", "EL"])
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    ref = _read(a.ref)
    bleu, chrf = BLEU(), CHRF()
    table = {}
    for name, files in zip(a.names, (a.baseline, a.system)):
        rows = []
        for f in files:
            hyp = _read(f)
            if len(hyp) != len(ref):
                sys.exit(f"compare: {f} has {len(hyp)} lines, the reference {len(ref)}")
            rows.append({"file": f, "bleu": bleu.corpus_score(hyp, [ref]).score,
                         "chrf": chrf.corpus_score(hyp, [ref]).score})
        table[name] = rows
    sig = str(bleu.get_signature())
    print(f"sacreBLEU signature: {sig}")
    print(f"{'system':<8} {'seeds':>5} {'BLEU mean ± std':>18} {'chrF mean ± std':>18}  per-seed BLEU")
    summary = {}
    for name, rows in table.items():
        b = [r["bleu"] for r in rows]
        c = [r["chrf"] for r in rows]
        sb = statistics.stdev(b) if len(b) > 1 else 0.0
        sc = statistics.stdev(c) if len(c) > 1 else 0.0
        summary[name] = {"bleu_mean": statistics.mean(b), "bleu_std": sb, "chrf_mean": statistics.mean(c),
                         "chrf_std": sc, "per_seed": rows}
        print(f"{name:<8} {len(b):>5} {statistics.mean(b):>10.2f} ± {sb:<5.2f} {statistics.mean(c):>10.2f} ± {sc:<5.2f}"
              f"  {' '.join(f'{x:.2f}' for x in b)}")
    pvals = []
    for fb, fs in zip(a.baseline, a.system):
        p = paired_bootstrap(ref, _read(fb), _read(fs), a.bootstrap)
        pvals.append({"baseline": fb, "system": fs, "p_value": p})
        print(f"paired bootstrap ({a.bootstrap} samples) {a.names[1]} vs {a.names[0]}: "
              f"{fs} vs {fb}: p = {p:.4f}" if p is not None else f"paired bootstrap: no p-value for {fs}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"signature": sig, "systems": summary, "paired_bootstrap": pvals}, f, indent=1)


if __name__ == "__main__":
    main()
