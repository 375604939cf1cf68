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


def _png_size(path):
    """(width, height) from a PNG's header; the file must be a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", path
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_plots(tmp_path, monkeypatch):
    """Each plot is a PNG of its figure's size, holding the data it is meant
    to: the bonus curves of the float64 reference, the logged values."""
    import matplotlib.axes
    import torch

    from tests.helpers.reference import bonus_value
    from wce_fairseq.tools import plots

    drawn = []
    real_plot = matplotlib.axes.Axes.plot

    def recording(ax, *args, **kw):
        drawn.append((kw.get("label"), args))
        return real_plot(ax, *args, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", recording)
    assert _png_size(plots.plot_bonus(str(tmp_path / "b.png"))) == (1200, 480)  # 10 x 4 in at 120 dpi
    curves = {label: args for label, args in drawn}
    p, b = curves["bonus log(1-p), LE=0.75"][:2]
    want = bonus_value(torch.as_tensor(p, dtype=torch.float64), "log", 0.75, None, 0.0)
    torch.testing.assert_close(torch.as_tensor(b, dtype=torch.float64), want, rtol=1e-12, atol=1e-12)

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
    drawn.clear()
    out = plots.plot_curves([("EL", str(log))], str(tmp_path / "c.png"))
    assert _png_size(out) == (4 * len(plots.CURVE_KEYS) * 110, round(3.6 * 110))
    valid = [list(zip(*args[:2])) for label, args in drawn if label == "EL valid"]  # one line per panel
    assert valid == [[(e, float(f(e))) for e in (1, 2, 3)] for f in
                     (lambda e: 5 - e, lambda e: 4 - e, lambda e: 0.2 * e, lambda e: 0.1 * e, lambda e: e - 1.5)]
    monkeypatch.undo()
    p = run([tool("python"), "-m", "wce_fairseq.tools.plots", "curves", "--log", f"EL={log}", "--log", f"base={log}",
             "--out", str(tmp_path / "c2.png")])
    assert _png_size(tmp_path / "c2.png") == _png_size(out), p.stdout
