"""tools/compare.py (mean ± std and paired bootstrap over seeds) and tools/plots.py."""
import json
import os

import pytest

pytest.importorskip("fairseq")

from tests.helpers.cli import run, tool  # noqa: E402

pytestmark = pytest.mark.slow


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
