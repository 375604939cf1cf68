"""Compare two systems over several seeds, with the paper's metric and the
modern one: tokenised BLEU (as fairseq-generate computes it), detokenised
sacreBLEU (with its signature) and chrF2 -- mean ± std over seeds, and
sacreBLEU's paired bootstrap test between the systems, seed by seed, for both
BLEUs and chrF.

    python -m wce_fairseq.tools.compare \\
        --baseline RUN_s1/eval.test/avg10 RUN_s2/eval.test/avg10 ... \\
        --system   EL_s1/eval.test/avg10  EL_s2/eval.test/avg10 ... \\
        [--names LS-CE EL] [--bootstrap 1000] [--json out.json]

Each argument is a folder written by the recipes' evaluate.sh (hyp.tok,
hyp.detok and scores.json, which names the references and the case setting).
Folders are paired in the order given (seed i of the baseline with seed i of
the system).
"""
import argparse
import json
import os
import statistics
import sys

from wce_fairseq.tools.score import chrf_metric, detok_bleu_metric, read_lines, score_all, tok_bleu_metric


def load(folder):
    path = os.path.join(folder, "scores.json")
    if not os.path.exists(path):
        sys.exit(f"compare: {folder} has no scores.json (give the folders evaluate.sh writes, e.g. SAVE/eval.test/avg10)")
    with open(path, encoding="utf-8") as f:
        info = json.load(f)
    return {"folder": folder, "info": info, "hyp_tok": read_lines(os.path.join(folder, "hyp.tok")),
            "hyp_detok": read_lines(os.path.join(folder, "hyp.detok"))}


def paired_bootstrap(refs, base, system, metrics, n_samples=1000):
    """{metric name: p-value of "system is not better than base"} from
    sacreBLEU's paired bootstrap resampling (its own implementation)."""
    from sacrebleu.significance import PairedTest

    test = PairedTest([("baseline", base), ("system", system)], metrics, references=[refs], test_type="bs",
                      n_samples=n_samples)
    _, scores = test()  # {"System": [...], score name: [result_baseline, result_system]}, in metrics' order
    keys = [k for k in scores if k != "System"]
    assert len(keys) == len(metrics), keys
    return {name: getattr(scores[k][1], "p_value", None) for name, k in zip(metrics, keys)}


def _mean_std(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", nargs="+", required=True)
    ap.add_argument("--system", nargs="+", required=True)
    ap.add_argument("--names", nargs=2, default=["LS-CE", "EL"])
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    runs = {name: [load(f) for f in folders] for name, folders in zip(a.names, (a.baseline, a.system))}
    first = runs[a.names[0]][0]["info"]
    ref_tok_path, ref_detok_path, lowercase = first["ref_tok"], first["ref_detok"], first["lowercase"]
    for rs in runs.values():
        for r in rs:
            i = r["info"]
            if (i["ref_tok"], i["ref_detok"], i["lowercase"]) != (ref_tok_path, ref_detok_path, lowercase):
                sys.exit(f"compare: {r['folder']} was scored against other references or case settings than "
                         f"{runs[a.names[0]][0]['folder']}")
    ref_tok = read_lines(ref_tok_path) if ref_tok_path else None
    ref_detok = read_lines(ref_detok_path)
    summary = {}
    for name, rs in runs.items():
        rows = []
        for r in rs:  # rescored here, from the text, not taken from scores.json
            s = score_all(r["hyp_tok"], ref_tok, r["hyp_detok"], ref_detok, lowercase)
            rows.append({"folder": r["folder"], **s})
        summary[name] = {"per_seed": rows}
        for key in ("tok_bleu", "sacrebleu", "chrf"):
            vals = [row[key] for row in rows]
            if None not in vals:
                summary[name][f"{key}_mean"], summary[name][f"{key}_std"] = _mean_std(vals)
    sig = summary[a.names[0]]["per_seed"][0]["sacrebleu_signature"]
    print(f"references: tokenised {ref_tok_path or 'none'}; detokenised {ref_detok_path}")
    print(f"sacreBLEU signature: {sig}")
    print(f"{'system':<8} {'seeds':>5} {'tok BLEU':>15} {'sacreBLEU':>15} {'chrF2':>15}   per-seed tok BLEU | sacreBLEU")
    for name, s in summary.items():
        def cell(key):
            return f"{s[key + '_mean']:>6.2f} ± {s[key + '_std']:<5.2f}" if key + "_mean" in s else f"{'n/a':>15}"
        per = lambda key: " ".join("n/a" if row[key] is None else f"{row[key]:.2f}" for row in s["per_seed"])  # noqa: E731
        print(f"{name:<8} {len(s['per_seed']):>5} {cell('tok_bleu')} {cell('sacrebleu')} {cell('chrf')}"
              f"   {per('tok_bleu')} | {per('sacrebleu')}")
    pvals = []
    for rb, rs_ in zip(runs[a.names[0]], runs[a.names[1]]):
        p = {}
        if ref_tok is not None:
            p.update({"tok_bleu": paired_bootstrap(ref_tok, rb["hyp_tok"], rs_["hyp_tok"],
                                                   {"tok_bleu": tok_bleu_metric()}, a.bootstrap)["tok_bleu"]})
        p.update(paired_bootstrap(ref_detok, rb["hyp_detok"], rs_["hyp_detok"],
                                  {"sacrebleu": detok_bleu_metric(lowercase), "chrf": chrf_metric(lowercase)},
                                  a.bootstrap))
        pvals.append({"baseline": rb["folder"], "system": rs_["folder"], "p_values": p})
        shown = ", ".join(f"{k} p = {v:.4f}" for k, v in p.items() if v is not None)
        print(f"paired bootstrap ({a.bootstrap} samples) {a.names[1]} vs {a.names[0]}, "
              f"{rs_['folder']} vs {rb['folder']}: {shown}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"signature": sig, "systems": summary, "paired_bootstrap": pvals}, f, indent=1)


if __name__ == "__main__":
    main()
