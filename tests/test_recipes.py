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


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipe_prepare_train_evaluate(recipe, raw, tmp_path):
    src, tgt = RECIPES[recipe]
    rdir = _raw_for(raw, src, tgt, str(tmp_path / "rawin"))
    out = str(tmp_path / "data")
    p = sh([f"examples/{recipe}/prepare.sh", "--raw", rdir, "--out", out, "--vocab", "200"])
    assert "[prepare] ready" in p.stdout
    data = os.path.join(out, "bin")
    assert os.path.exists(os.path.join(data, f"dict.{src}.txt"))
    # both systems once; the other recipes share train_common.sh, so EL suffices there
    for system in (("baseline", "el") if recipe == "iwslt14_de_en" else ("el",)):
        save = str(tmp_path / system)
        p = sh([f"examples/{recipe}/train.sh", data, system, "1", save, *TINY])
        recs = json_records(open(os.path.join(save, "train.log")).read())
        assert [r["epoch"] for r in recs] == [1, 2]
        assert float(recs[-1]["bonus_weight"]) == (1.0 if system == "el" else 0.0)
        e = sh([f"examples/{recipe}/evaluate.sh", data, save, os.path.join(out, "raw", f"test.{tgt}"), "--last", "2"])
        scores = open(os.path.join(save, "eval.test", "scores.txt")).read()
        assert "sacreBLEU (detok): " in scores and "nrefs:1" in scores and "chrF2: " in scores
        assert re.search(r"fairseq BLEU4 \(whitespace tokens\): \d", scores), scores
        assert len(open(os.path.join(save, "eval.test", "hyp")).read().splitlines()) == 40
        assert "checkpoint_avg2.pt" in e.stdout
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
    ref = ["the cat sees a dog .", "a red house stands near the river .", "the king reads a book ."] * 10
    good = list(ref)
    bad = [r.replace("the", "a") for r in ref]
    files = {}
    for name, lines in (("b1", bad), ("b2", bad[:-1] + [ref[-1]]), ("s1", good), ("s2", good)):
        files[name] = tmp_path / f"{name}.txt"
        files[name].write_text("\n".join(lines) + "\n")
    (tmp_path / "ref.txt").write_text("\n".join(ref) + "\n")
    out = tmp_path / "cmp.json"
    p = run([tool("python"), "-m", "wce_fairseq.tools.compare", "--ref", str(tmp_path / "ref.txt"),
             "--baseline", str(files["b1"]), str(files["b2"]), "--system", str(files["s1"]), str(files["s2"]),
             "--bootstrap", "200", "--json", str(out)])
    res = json.loads(out.read_text())
    assert "nrefs:1" in res["signature"]
    assert res["systems"]["EL"]["bleu_mean"] == pytest.approx(100.0)
    assert res["systems"]["EL"]["bleu_std"] == pytest.approx(0.0)
    assert res["systems"]["LS-CE"]["bleu_std"] > 0
    assert all(r["p_value"] < 0.05 for r in res["paired_bootstrap"])
    assert "±" in p.stdout


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
