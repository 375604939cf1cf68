"""Offline quickstart: label-smoothed CE vs the encouraging loss on a synthetic
translation task that needs no download (see toy_corpus.py beside this script).

    python examples/quickstart/run.py [--out runs/quickstart] [--epochs 6] [--seed 1]

Stages: corpus -> SentencePiece + fairseq-preprocess -> fairseq-train (LS-CE)
-> fairseq-train (EL) -> fairseq-generate (beam 5) -> sacreBLEU -> plots.
Every stage prints its progress; fairseq's per-epoch lines are shown as they come.
"""
import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PLUGIN = os.path.join(REPO, "wce_fairseq")
BIN = os.path.dirname(sys.executable)

MODEL = [
    "--arch", "transformer", "--share-all-embeddings",
    "--encoder-layers", "2", "--decoder-layers", "2",
    "--encoder-embed-dim", "128", "--decoder-embed-dim", "128",
    "--encoder-ffn-embed-dim", "256", "--decoder-ffn-embed-dim", "256",
    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
    "--dropout", "0.1", "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "2e-3",
    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "200", "--max-tokens", "4096",
    "--cpu", "--num-workers", "0", "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", "100",
]
# The baseline is label-smoothed CE computed by our criterion at bonus weight 0,
# which equals fairseq's label_smoothed_cross_entropy (loss, nll and gradients;
# tests/test_criterion.py) and also logs the diagnostics the plots compare.
SYSTEMS = {
    "LS-CE": ["--criterion", "encouraging_ce", "--label-smoothing", "0.1", "--bonus-weight", "0"],
    "EL": ["--criterion", "encouraging_ce", "--label-smoothing", "0.1", "--log-end", "0.5"],
}


def stage(i, n, msg):
    print(f"\n[{i}/{n}] {msg}", flush=True)


def stream(cmd, log_path, echo=lambda line: None, cwd=None):
    """Run cmd, tee its output to log_path, print what `echo` makes of a line."""
    t0 = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                             env=dict(os.environ, PYTHONUNBUFFERED="1", PATH=BIN + os.pathsep + os.environ["PATH"]))
        for line in p.stdout:
            log.write(line)
            shown = echo(line)
            if shown:
                print("   " + shown[:220], flush=True)
        p.wait()
    if p.returncode != 0:
        print(open(log_path, encoding="utf-8").read()[-3000:], file=sys.stderr)
        sys.exit(f"quickstart: {' '.join(cmd[:2])} failed (exit {p.returncode}); log: {log_path}")
    return time.time() - t0


def epoch_summary(line):
    """One short line for fairseq's per-epoch train/valid record, else None."""
    from wce_fairseq.tools.plots import parse_log_lines

    for kind, recs in parse_log_lines([line]).items():
        for r in recs:
            keys = ["loss", "nll_loss", "bonus", "target_prob", "well_classified", "margin"]
            return f"epoch {r['epoch']:>2} {kind:<5} " + " ".join(f"{x}={r[x]}" for x in keys if x in r)
    return None


def words_per_second(train_log):
    """Training throughput: target words over training time, from fairseq's
    per-epoch records (wps, and the words per batch and updates behind it)."""
    from wce_fairseq.tools.plots import parse_log_lines

    with open(train_log, encoding="utf-8") as f:
        recs = parse_log_lines(f.read().splitlines())["train"]
    words = sum(float(r["wps"]) * float(r["train_wall"]) for r in recs)
    return words / max(sum(float(r["train_wall"]) for r in recs), 1e-9)


def bleu(hyp_path, ref_path):
    import sacrebleu

    hyps = [line.rstrip("\n") for line in open(hyp_path, encoding="utf-8")]
    refs = [line.rstrip("\n") for line in open(ref_path, encoding="utf-8")]
    # the synthetic corpus is written with spaces around its punctuation ("... ."): sacreBLEU's
    # "forgot to detokenize" warning does not apply to it
    metric = sacrebleu.metrics.BLEU(force=True)
    score = metric.corpus_score(hyps, [refs])
    chrf = sacrebleu.metrics.CHRF()
    c = chrf.corpus_score(hyps, [refs])
    return score, str(metric.get_signature()), c, str(chrf.get_signature())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(REPO, "runs", "quickstart"))
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--train-size", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    n = 7
    t_start = time.time()

    stage(1, n, f"synthetic parallel corpus (en -> ps, {a.train_size} training pairs) in {out}/raw")
    from toy_corpus import write_corpus  # beside this script

    print("   ", write_corpus(os.path.join(out, "raw"), a.train_size, 400, 400, seed=a.seed))

    stage(2, n, "SentencePiece + fairseq-preprocess")
    stream(["bash", os.path.join(REPO, "examples/common/binarize.sh"), "en", "ps", os.path.join(out, "raw"), out, "256"],
           os.path.join(out, "binarize.log"), echo=lambda line: line.rstrip() if line.startswith("[binarize]") else None)
    data = os.path.join(out, "bin")

    results = {}
    for i, (name, crit) in enumerate(SYSTEMS.items()):
        run_dir = os.path.join(out, name)
        stage(3 + i, n, f"fairseq-train {name}: {' '.join(crit)} ({a.epochs} epochs)")
        cmd = [os.path.join(BIN, "fairseq-train"), data, "--user-dir", PLUGIN, "--task", "translation_encouraging",
               *crit, *MODEL, "--max-epoch", str(a.epochs), "--seed", str(a.seed), "--save-dir", run_dir]
        log = os.path.join(out, f"{name}.train.log")
        secs = stream(cmd, log, epoch_summary)
        results[name] = {"train_s": secs, "wps": words_per_second(log)}
        if name == "EL":
            print("   (EL's loss is the label-smoothed CE plus the bonus rho * sum_v q'_v B(p_v), which is <= 0:\n"
                  "    it falls below zero as tokens become well classified; nll_loss compares the two systems)")

    stage(5, n, "fairseq-generate (beam 5) on the test set + sacreBLEU")
    from wce_fairseq.tools.score import translations

    ref = os.path.join(out, "raw", "test.ps")
    for name in SYSTEMS:
        hyp = os.path.join(out, f"{name}.test.hyp")
        log = os.path.join(out, f"{name}.generate.log")
        stream([os.path.join(BIN, "fairseq-generate"), data, "--user-dir", PLUGIN, "--task", "translation_encouraging",
                "--path", os.path.join(out, name, "checkpoint_best.pt"), "--beam", "5", "--batch-size", "128",
                "--cpu", "--remove-bpe", "sentencepiece", "--gen-subset", "test"], log)
        n_refs = sum(1 for _ in open(ref, encoding="utf-8"))
        hyps, _ = translations(log, n_refs, prefix="D-")  # refuses a test set translated only in part
        with open(hyp, "w", encoding="utf-8") as f:
            f.writelines(h + "\n" for h in hyps)
        score, sig, chrf, _ = bleu(hyp, ref)
        results[name].update(bleu=score.score, sig=sig, chrf=chrf.score)
        print(f"   {name}: {score}  |  chrF2 {chrf.score:.2f}", flush=True)

    stage(6, n, "plots (bonus curves, training curves, target-probability histograms)")
    from wce_fairseq.tools import plots

    pngs = [
        plots.plot_bonus(os.path.join(out, "bonus_curves.png")),
        plots.plot_curves([(k, os.path.join(out, f"{k}.train.log")) for k in SYSTEMS],
                          os.path.join(out, "training_curves.png")),
        plots.plot_hist(data, [(k, os.path.join(out, k, "checkpoint_best.pt")) for k in SYSTEMS],
                        os.path.join(out, "target_prob_hist.png")),
    ]
    for p in pngs:
        print("   wrote", p)

    stage(7, n, "summary")
    print(f"   sacreBLEU signature: {results['EL']['sig']}")
    print(f"   {'system':<8} {'BLEU':>7} {'chrF2':>7} {'words/s':>9} {'x LS-CE':>8} {'wall':>6}")
    for name, r in results.items():
        ratio = r["wps"] / results["LS-CE"]["wps"]
        print(f"   {name:<8} {r['bleu']:>7.2f} {r['chrf']:>7.2f} {r['wps']:>9.0f} {ratio:>8.2f} {r['train_s']:>5.0f}s")
    print("   (words/s: fairseq's training throughput, the same words for both systems; wall: the whole command,\n"
          "    start-up, validation and checkpoints included, which other processes on the machine also slow)")
    print(f"   total {time.time() - t_start:.0f}s; outputs in {out}")
    print("   (one seed on a synthetic task: a smoke test of the pipeline, not evidence for or against EL)")


if __name__ == "__main__":
    main()
