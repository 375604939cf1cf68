"""tools/score.py: tokenised BLEU as fairseq's scorer computes it, sacreBLEU and chrF as its command line does."""
import json
import re
import shutil
import subprocess

import pytest

pytest.importorskip("sacremoses")
pytest.importorskip("subword_nmt")

from tests.helpers.cli import tool  # noqa: E402

HYP = ["the cat sat on the mat .", "there is a dog in the house", "a b c d e f", "it &apos;s fine ."]


REF = ["the cat sat on a mat .", "there is a dog in my house .", "a b c d e f g", "it &apos;s fine !"]


def test_tokenised_bleu_equals_fairseq_scorer():
    fairseq = pytest.importorskip("fairseq")  # noqa: F841
    from fairseq.data import Dictionary
    from fairseq.scoring.bleu import BleuConfig, Scorer

    from wce_fairseq.tools.score import score_all

    d = Dictionary()
    scorer = Scorer(BleuConfig(pad=d.pad(), eos=d.eos(), unk=d.unk()))
    for h, r in zip(HYP, REF):  # what fairseq-generate does with --remove-bpe: re-encode both strings
        scorer.add(d.encode_line(r, add_if_not_exist=True), d.encode_line(h, add_if_not_exist=True))
    ours = score_all(HYP, REF, HYP, REF, lowercase=False)
    assert ours["tok_bleu"] == pytest.approx(scorer.score(), abs=1e-9)
    assert ours["tok_bleu_detail"]["sys_len"] == scorer.stat.predlen
    assert ours["tok_bleu_detail"]["ref_len"] == scorer.stat.reflen
    assert ours["tok_bleu"] > 10


def test_detok_scores_match_sacrebleu_cli(tmp_path):
    from wce_fairseq.tools.score import score_all

    hyp = ["The cat sat on the mat.", "There is a dog in the house"]
    ref = ["the cat sat on a mat.", "There is a dog in my house."]
    (tmp_path / "h").write_text("\n".join(hyp) + "\n")
    (tmp_path / "r").write_text("\n".join(ref) + "\n")

    def cli(*args):
        out = subprocess.run([tool("sacrebleu"), str(tmp_path / "r"), "-i", str(tmp_path / "h"), *args, "-w", "6"],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)

    for lc in (False, True):
        ours = score_all(hyp, None, hyp, ref, lowercase=lc)
        b = cli("-m", "bleu", *(["-lc"] if lc else []))
        c = cli("-m", "chrf", *(["--chrf-lowercase"] if lc else []))
        assert ours["sacrebleu"] == pytest.approx(b["score"], abs=1e-5)
        assert ours["chrf"] == pytest.approx(c["score"], abs=1e-5)
        assert ours["sacrebleu_signature"] == b["signature"] and ours["chrf_signature"] == c["signature"]
        assert ("case:lc" in ours["sacrebleu_signature"]) == lc
        assert ours["tok_bleu"] is None


@pytest.mark.slow
def test_refuses_a_test_set_translated_in_part(tmp_path, toy_data):
    """A fairseq-generate output that misses sentences (the ve-fairseq fork
    drops the last batch when it is smaller than --required-batch-size-multiple)
    is refused, naming the fix, instead of scored on fewer sentences; the
    whole output is scored."""
    pytest.importorskip("fairseq")
    from tests.helpers.cli import PLUGIN, run, train

    data = toy_data(n_train=300, n_valid=40, n_test=40, vocab=150)
    train(data, str(tmp_path / "ck"), ["--max-epoch", "1", "--max-update", "2"])
    gen = [tool("fairseq-generate"), data, "--user-dir", PLUGIN, "--task", "translation_encouraging", "--path",
           str(tmp_path / "ck" / "checkpoint_last.pt"), "--beam", "1", "--cpu", "--remove-bpe", "sentencepiece",
           "--batch-size", "3"]
    score = [tool("python"), "-m", "wce_fairseq.tools.score", "generate", "--bin", data, "--out", str(tmp_path / "s")]
    whole = run([*gen, "--required-batch-size-multiple", "1"]).stdout
    assert len(re.findall(r"^H-\d+\t", whole, flags=re.M)) == 40
    # one sentence's lines taken out by hand, and fairseq's own default batching
    (tmp_path / "cut.txt").write_text("".join(ln for ln in whole.splitlines(True) if not re.match(r"^[STHDP]-7\t", ln)))
    default = run(gen).stdout
    (tmp_path / "default.txt").write_text(default)
    for name, n in (("cut.txt", 39), ("default.txt", len(re.findall(r"^H-\d+\t", default, flags=re.M)))):
        result = run([*score, "--gen", str(tmp_path / name)], check=False)
        if n == 40:  # the upstream 0.12.2 keeps the last batch
            assert result.returncode == 0, result.stderr
            shutil.rmtree(tmp_path / "s")
            continue
        assert result.returncode != 0 and f"translates {n} of the 40" in result.stderr, (name, result.stderr)
        assert "--required-batch-size-multiple 1" in result.stderr and not (tmp_path / "s").exists()
    (tmp_path / "all.txt").write_text(whole)
    ok = run([*score, "--gen", str(tmp_path / "all.txt")])
    assert "sacreBLEU" in ok.stdout and json.loads((tmp_path / "s" / "scores.json").read_text())["subset"] == "test"
