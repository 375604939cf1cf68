"""The recipes under examples/ end to end on a tiny local corpus (the
"already downloaded" path), on the CPU, with a tiny model passed as extra
fairseq arguments; plus the comparison and plotting tools."""
import json
import os
import re
import shutil
import subprocess

import pytest

pytest.importorskip("fairseq")

from cli_helpers import REPO, json_records, run, tool  # noqa: E402

pytestmark = pytest.mark.slow

TINY = ["--arch", "transformer", "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32",
        "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
        "--encoder-attention-heads", "2", "--decoder-attention-heads", "2", "--max-tokens", "1500",
        "--update-freq", "1", "--warmup-updates", "10", "--lr", "2e-3", "--max-update", "1000", "--max-epoch", "2",
        "--cpu", "--num-workers", "0", "--no-progress-bar"]
RECIPES = {"iwslt14_de_en": ("de", "en"), "iwslt17_fr_en": ("fr", "en"), "wmt14_en_de": ("en", "de")}


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", NGPU="0")
    env["PATH"] = os.path.dirname(tool("python")) + os.pathsep + env["PATH"]
    return env


def sh(args, check=True, **kw):
    p = subprocess.run(["bash", *args], capture_output=True, text=True, env=_env(), cwd=REPO, timeout=600, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    from wce_fairseq.toy_corpus import write_corpus

    d = str(tmp_path_factory.mktemp("raw"))
    write_corpus(d, 500, 40, 40, seed=3)
    return d


def _raw_for(raw, src, tgt, dest):
    os.makedirs(dest, exist_ok=True)
    for s in ("train", "valid", "test"):
        shutil.copy(os.path.join(raw, f"{s}.en"), os.path.join(dest, f"{s}.{src}"))
        shutil.copy(os.path.join(raw, f"{s}.ps"), os.path.join(dest, f"{s}.{tgt}"))
    return dest


def _check_scores(folder, case):
    """scores.json of one evaluated checkpoint: the tokenised BLEU recomputed
    from the text equals fairseq-generate's own BLEU4 line (same lengths,
    precisions as it rounds them), and sacreBLEU signs the case it used."""
    sc = json.load(open(os.path.join(folder, "scores.json")))
    fs, ours = sc["fairseq_generate_bleu4"], sc["tok_bleu_detail"]
    assert fs is not None and sc["tok_bleu"] == pytest.approx(fs["bleu"], abs=0.006)
    assert (ours["sys_len"], ours["ref_len"]) == (fs["sys_len"], fs["ref_len"])
    assert ours["precisions"] == pytest.approx(fs["precisions"], abs=0.051)
    assert f"case:{case}" in sc["sacrebleu_signature"] and f"case:{case}" in sc["chrf_signature"]
    text = open(os.path.join(folder, "scores.txt")).read()
    assert "tokenised BLEU (the paper's metric): " in text and "sacreBLEU (detok): " in text and "chrF2: " in text
    return sc


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipe_prepare_train_evaluate(recipe, raw, tmp_path):
    src, tgt = RECIPES[recipe]
    rdir = _raw_for(raw, src, tgt, str(tmp_path / "rawin"))
    if recipe == "iwslt17_fr_en":  # a second test set (tst2017 in the real recipe)
        for lang, k in ((src, "en"), (tgt, "ps")):
            shutil.copy(os.path.join(raw, f"valid.{k}"), os.path.join(rdir, f"test1.{lang}"))
    out = str(tmp_path / "data")
    p = sh([f"examples/{recipe}/prepare.sh", "--raw", rdir, "--out", out, "--vocab", "200"])
    assert "[prepare] ready" in p.stdout
    data = os.path.join(out, "bin")
    assert os.path.exists(os.path.join(data, f"dict.{src}.txt"))
    if recipe == "iwslt14_de_en":  # the paper's pipeline: Moses + BPE, valid held out of train
        assert "valid.* is not used" in p.stdout and os.path.exists(os.path.join(out, "bpe", "train.de"))
    # both systems once; the other recipes share train_common.sh, so EL suffices there
    for system in (("baseline", "el") if recipe == "iwslt14_de_en" else ("el",)):
        save = str(tmp_path / system)
        p = sh([f"examples/{recipe}/train.sh", data, system, "1", save, *TINY])
        recs = json_records(open(os.path.join(save, "train.log")).read())
        assert [r["epoch"] for r in recs] == [1, 2]
        assert float(recs[-1]["bonus_weight"]) == (1.0 if system == "el" else 0.0)
        # checkpoint_best is selected by validation BLEU
        valid = json_records(open(os.path.join(save, "train.log")).read(), "valid")
        assert all("bleu" in r for r in valid) and "best_bleu" in valid[-1], valid
        e = sh([f"examples/{recipe}/evaluate.sh", data, save, "--last", "2"])
        assert "checkpoint_avg2.pt" in e.stdout
        labels = ["avg2", "best"]
        for label in labels:
            sc = _check_scores(os.path.join(save, "eval.test", label), "lc" if recipe == "iwslt14_de_en" else "mixed")
            assert len(open(os.path.join(save, "eval.test", label, "hyp.detok")).read().splitlines()) == 40
            assert sc["ref_detok"] == os.path.join(out, "raw", f"test.{tgt}")
        summary = open(os.path.join(save, "eval.test", "scores.txt")).read()
        assert summary.count("tokenised BLEU") == len(labels)
    if recipe == "iwslt17_fr_en":
        sh([f"examples/{recipe}/evaluate.sh", data, str(tmp_path / "el"), "--last", "2", "--subset", "test1",
            "--checkpoints", "avg"])
        _check_scores(str(tmp_path / "el" / "eval.test1" / "avg2"), "mixed")
    if recipe == "iwslt14_de_en":  # the histogram command on real checkpoints
        png = str(tmp_path / "hist.png")
        run([tool("python"), "-m", "wce_fairseq.tools.plots", "hist", data, "--ckpt",
             f"LS-CE={tmp_path / 'baseline' / 'checkpoint_last.pt'}", "--ckpt",
             f"EL={tmp_path / 'el' / 'checkpoint_last.pt'}", "--out", png], cwd=REPO)
        assert open(png, "rb").read(4) == b"\x89PNG"


def test_recipe_errors_are_loud(tmp_path):
    p = sh(["examples/iwslt14_de_en/prepare.sh", "--raw", str(tmp_path), "--out", str(tmp_path / "o")], check=False)
    assert p.returncode != 0 and "missing or empty file" in p.stderr
    p = sh(["examples/iwslt14_de_en/train.sh", str(tmp_path), "el"], check=False)
    assert p.returncode != 0 and "does not look like fairseq data" in p.stderr
    p = sh(["examples/iwslt14_de_en/train.sh", str(tmp_path)], check=False)
    assert p.returncode == 2 and "usage" in p.stderr


def test_compare_tool(tmp_path):
    ref_tok = ["the cat sees a dog .", "a red house stands near the river .", "the king reads a book ."] * 10
    ref_detok = [r.replace(" .", ".").capitalize() for r in ref_tok]
    (tmp_path / "ref.tok").write_text("\n".join(ref_tok) + "\n")
    (tmp_path / "ref.detok").write_text("\n".join(ref_detok) + "\n")
    good = list(ref_tok)
    bad = [r.replace("the", "a") for r in ref_tok]
    folders = {}
    for name, lines in (("b1", bad), ("b2", bad[:-1] + [ref_tok[-1]]), ("s1", good), ("s2", good)):
        d = tmp_path / name
        d.mkdir()
        (d / "hyp.tok").write_text("\n".join(lines) + "\n")
        (d / "hyp.detok").write_text("\n".join(x.replace(" .", ".") for x in lines) + "\n")  # lowercased output
        (d / "scores.json").write_text(json.dumps({"ref_tok": str(tmp_path / "ref.tok"),
                                                   "ref_detok": str(tmp_path / "ref.detok"), "lowercase": True}))
        folders[name] = str(d)
    out = tmp_path / "cmp.json"
    p = run([tool("python"), "-m", "wce_fairseq.tools.compare", "--baseline", folders["b1"], folders["b2"],
             "--system", folders["s1"], folders["s2"], "--bootstrap", "200", "--json", str(out)])
    res = json.loads(out.read_text())
    assert "nrefs:1|case:lc" in res["signature"]
    el, base = res["systems"]["EL"], res["systems"]["LS-CE"]
    # lowercased hypotheses against cased references score 100 only because sacreBLEU folds case
    assert el["tok_bleu_mean"] == pytest.approx(100.0) and el["sacrebleu_mean"] == pytest.approx(100.0)
    assert el["tok_bleu_std"] == pytest.approx(0.0) and base["tok_bleu_std"] > 0 and base["sacrebleu_std"] > 0
    from sacrebleu.metrics import BLEU

    b1 = BLEU(tokenize="none", smooth_method="none", force=True).corpus_score(bad, [ref_tok]).score
    assert base["per_seed"][0]["tok_bleu"] == pytest.approx(b1)
    for r in res["paired_bootstrap"]:
        assert set(r["p_values"]) == {"tok_bleu", "sacrebleu", "chrf"} and all(v < 0.05 for v in r["p_values"].values())
    assert "±" in p.stdout and "tok BLEU" in p.stdout
    # folders scored against different references are refused
    (tmp_path / "s2" / "scores.json").write_text(json.dumps({"ref_tok": None, "ref_detok": str(tmp_path / "ref.detok"),
                                                             "lowercase": True}))
    bad_run = run([tool("python"), "-m", "wce_fairseq.tools.compare", "--baseline", folders["b1"], folders["b2"],
                   "--system", folders["s1"], folders["s2"], "--bootstrap", "10"], check=False)
    assert bad_run.returncode != 0 and "other references" in bad_run.stderr


def test_plots(tmp_path):
    from wce_fairseq.tools import plots

    def is_png(path):
        with open(path, "rb") as f:
            return f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 10_000

    assert is_png(plots.plot_bonus(str(tmp_path / "b.png")))
    log = tmp_path / "train.log"
    lines = []
    for ep in (1, 2, 3):
        for kind in ("train", "valid"):
            rec = {"epoch": ep, f"{kind}_loss": 5 - ep, f"{kind}_nll_loss": 4 - ep, f"{kind}_target_prob": 0.2 * ep,
                   f"{kind}_well_classified": 0.1 * ep, f"{kind}_margin": ep - 1.5}
            lines.append(f"2026 | INFO | {kind} | {json.dumps(rec)}")
    log.write_text("\n".join(lines) + "\n")
    recs = plots.read_log(str(log))
    assert [r["epoch"] for r in recs["valid"]] == [1, 2, 3]
    p = run([tool("python"), "-m", "wce_fairseq.tools.plots", "curves", "--log", f"EL={log}", "--log", f"base={log}",
             "--out", str(tmp_path / "c.png")])
    assert is_png(tmp_path / "c.png"), p.stdout
