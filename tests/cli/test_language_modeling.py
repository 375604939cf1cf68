"""--task language_modeling through fairseq's command line: the criterion
trains a language model under every --sample-break-mode, and fairseq-eval-lm
scores it (numpy >= 2 needs the plugin's numpy fix for the eos mode:
wce_fairseq/fairseq_compat.py)."""
import json
import os
import re

import pytest

pytest.importorskip("fairseq")

from tests.helpers.cli import PLUGIN, json_records, run, tool, toy_corpus  # noqa: E402

pytestmark = pytest.mark.slow

LM = ["--arch", "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim", "32",
      "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "2", "--dropout", "0.1",
      "--optimizer", "adam", "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "20",
      "--max-tokens", "1024", "--tokens-per-sample", "64", "--cpu", "--seed", "3", "--num-workers", "0",
      "--no-progress-bar", "--log-format", "json", "--log-interval", "1000", "--no-epoch-checkpoints",
      "--max-epoch", "1"]


@pytest.fixture(scope="module")
def lm_data(tmp_path_factory):
    """The English side of the toy corpus, one sentence a line, with a blank
    line every 10 sentences (documents, for complete_doc)."""
    root = tmp_path_factory.mktemp("lm")
    raw = root / "raw"
    toy_corpus().write_corpus(str(raw), 300, 40, 40, seed=7)
    for split in ("train", "valid", "test"):
        lines = (raw / f"{split}.en").read_text(encoding="utf-8").splitlines()
        docs = ["\n".join(lines[i:i + 10]) for i in range(0, len(lines), 10)]
        (raw / f"{split}.lm").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    run([tool("fairseq-preprocess"), "--only-source", "--trainpref", str(raw / "train.lm"),
         "--validpref", str(raw / "valid.lm"), "--testpref", str(raw / "test.lm"), "--destdir", str(root / "bin"),
         "--workers", "1"])
    return str(root / "bin")


@pytest.mark.parametrize("mode", ["none", "complete", "complete_doc", "eos"])
def test_language_model_trains_and_fairseq_eval_lm_scores_it(lm_data, tmp_path, mode):
    save = str(tmp_path / "lm")
    p = run([tool("fairseq-train"), lm_data, "--user-dir", PLUGIN, "--task", "language_modeling",
             "--criterion", "encouraging_ce", "--label-smoothing", "0.1", "--log-end", "0.75",
             "--sample-break-mode", mode, "--save-dir", save, *LM])
    recs = json_records(p.stdout)
    assert [r["epoch"] for r in recs] == [1]
    assert float(recs[-1]["bonus_weight"]) == 1.0 and "margin" in recs[-1]
    ev = run([tool("fairseq-eval-lm"), lm_data, "--user-dir", PLUGIN, "--path", os.path.join(save, "checkpoint_last.pt"),
              "--gen-subset", "valid", "--sample-break-mode", mode, "--tokens-per-sample", "64", "--max-tokens", "1024",
              "--cpu", "--context-window", "0" if mode != "none" else "32"])
    m = re.search(r"Loss \(base 2\): ([\d.]+), Perplexity: ([\d.]+)", ev.stdout + ev.stderr)
    assert m, (ev.stdout + ev.stderr)[-2000:]
    # eval-lm's loss is the plain nll, fairseq-train's nll_loss is in the same base-2 units
    valid_nll = float(json_records(p.stdout, "valid")[-1]["nll_loss"])
    # fairseq-eval-lm's loss on the validation blocks is the validation nll fairseq-train logged (within
    # their different averaging: about 0.3 % here)
    assert float(m.group(1)) == pytest.approx(valid_nll, rel=0.01)
    assert float(m.group(2)) == pytest.approx(2 ** float(m.group(1)), rel=1e-2)
