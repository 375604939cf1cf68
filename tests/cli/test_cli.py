"""End to end through fairseq's command line on tiny generated data."""
import os
import subprocess
import re
import textwrap

import pytest
import torch

pytest.importorskip("fairseq")

from tests.helpers.cli import PLUGIN, at_once, json_records, run, tool, train  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(toy_data):
    return toy_data()


def test_train_resume_generate_interactive(data, tmp_path):
    ck = str(tmp_path / "ck")
    el = ["--label-smoothing", "0.1", "--log-end", "0.5"]
    p1 = train(data, ck, [*el, "--max-epoch", "2"])
    recs = json_records(p1.stdout)
    assert [r["epoch"] for r in recs] == [1, 2]
    for key in ("loss", "nll_loss", "ppl", "bonus", "bonus_weight", "target_prob", "well_classified", "margin"):
        assert key in recs[-1], key
    assert os.path.exists(os.path.join(ck, "checkpoint_last.pt"))

    p2 = train(data, ck, [*el, "--max-epoch", "3"])
    assert "Loaded checkpoint" in p2.stdout and "(epoch 3 @" in p2.stdout
    assert [r["epoch"] for r in json_records(p2.stdout)] == [3]

    gen = run([tool("fairseq-generate"), data, "--user-dir", PLUGIN, "--task", "translation_encouraging",
               "--path", os.path.join(ck, "checkpoint_last.pt"), "--beam", "2", "--batch-size", "32", "--cpu",
               "--remove-bpe", "sentencepiece", "--required-batch-size-multiple", "1"])
    # every test sentence translated, and fairseq's BLEU4 line is the BLEU of those translations: sacreBLEU on
    # the whitespace tokens fairseq scores, against the T- lines it prints
    from wce_fairseq.tools.score import score_all, translations

    gen_txt = tmp_path / "generate.txt"
    gen_txt.write_text(gen.stdout)
    hyps, fairseq_bleu = translations(str(gen_txt), 60)
    refs = [text for _, text in sorted(_by_id(gen.stdout, "T-").items())]
    tok_bleu = score_all(hyps, refs, hyps, refs, lowercase=False)["tok_bleu"]
    assert fairseq_bleu is not None and tok_bleu == pytest.approx(fairseq_bleu["bleu"], abs=0.006)

    p = subprocess.run(
        [tool("fairseq-interactive"), data, "--user-dir", PLUGIN, "--task", "translation_encouraging",
         "--path", os.path.join(ck, "checkpoint_last.pt"), "--beam", "2", "--cpu",
         "--source-lang", "en", "--target-lang", "ps"],
        input="▁the ▁cat ▁sees ▁a ▁dog ▁.\n", capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert re.search(r"^H-0\t", p.stdout, re.M)


def _by_id(text, prefix):
    return {int(line.split("\t", 1)[0][len(prefix):]): line.split("\t")[-1]
            for line in text.splitlines() if line.startswith(prefix)}


def test_weight_zero_training_log_equals_stock(data, tmp_path):
    common = ["--label-smoothing", "0.1", "--max-epoch", "2"]
    stock, ours = at_once(
        lambda: train(data, str(tmp_path / "a"), common, criterion=("--criterion", "label_smoothed_cross_entropy")),
        lambda: train(data, str(tmp_path / "b"), [*common, "--bonus-weight", "0"]))
    a, b = json_records(stock.stdout), json_records(ours.stdout)
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), abs=2e-3)
        assert float(ra["nll_loss"]) == pytest.approx(float(rb["nll_loss"]), abs=2e-3)
    va, vb = json_records(stock.stdout, "valid"), json_records(ours.stdout, "valid")
    assert float(va[-1]["loss"]) == pytest.approx(float(vb[-1]["loss"]), abs=2e-3)


def test_hydra_yaml(data, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "el.yaml").write_text(textwrap.dedent(f"""\
        # @package _group_
        common:
          user_dir: {PLUGIN}
          cpu: true
          seed: 1
          log_format: json
          no_progress_bar: true
        task:
          _name: translation_encouraging
          data: {data}
        criterion:
          _name: encouraging_ce
          label_smoothing: 0.1
          log_end: 0.75
          bonus_schedule: linear
          bonus_schedule_length: 1000
        model:
          _name: transformer
          encoder_layers: 1
          decoder_layers: 1
          encoder_embed_dim: 32
          decoder_embed_dim: 32
          encoder_ffn_embed_dim: 64
          decoder_ffn_embed_dim: 64
          encoder_attention_heads: 2
          decoder_attention_heads: 2
          share_all_embeddings: true
        optimizer:
          _name: adam
        lr_scheduler:
          _name: inverse_sqrt
          warmup_updates: 10
        optimization:
          lr: [0.002]
          max_epoch: 1
        dataset:
          max_tokens: 1200
          num_workers: 0
        checkpoint:
          save_dir: {tmp_path / 'ck'}
        """))
    p = run([tool("fairseq-hydra-train"), "--config-dir", str(conf), "--config-name", "el"], cwd=str(tmp_path))
    valid = json_records(p.stdout, "valid")
    k = int(valid[-1]["num_updates"])  # the linear schedule over 1000 updates, at validation t = k
    assert k > 0 and float(valid[-1]["bonus_weight"]) == round(k / 1000, 4)
    state = torch.load(tmp_path / "ck" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    crit = state["cfg"]["criterion"]
    assert crit["_name"] == "encouraging_ce" and crit["log_end"] == 0.75 and crit["bonus_schedule"] == "linear"


def test_hydra_relative_user_dir(data, tmp_path):
    """Hydra changes into outputs/DATE/TIME before fairseq imports the plugin, so a
    relative common.user_dir is not found there; with hydra.run.dir=. it is."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "rel.yaml").write_text(textwrap.dedent(f"""\
        # @package _group_
        common: {{user_dir: wce_fairseq, cpu: true, log_format: json, no_progress_bar: true}}
        task: {{_name: translation_encouraging, data: {data}}}
        criterion: {{_name: encouraging_ce, label_smoothing: 0.1}}
        model: {{_name: transformer, encoder_layers: 1, decoder_layers: 1, encoder_embed_dim: 32,
                 decoder_embed_dim: 32, encoder_ffn_embed_dim: 64, decoder_ffn_embed_dim: 64,
                 encoder_attention_heads: 2, decoder_attention_heads: 2, share_all_embeddings: true}}
        optimizer: {{_name: adam}}
        lr_scheduler: {{_name: inverse_sqrt, warmup_updates: 10}}
        optimization: {{lr: [0.002], max_epoch: 1}}
        dataset: {{max_tokens: 1200, num_workers: 0}}
        checkpoint: {{save_dir: {tmp_path / 'ck'}}}
        """))
    work = tmp_path / "work"  # a directory holding the plugin folder, as a checkout does
    work.mkdir()
    os.symlink(PLUGIN, work / "wce_fairseq")
    cmd = [tool("fairseq-hydra-train"), "--config-dir", str(conf), "--config-name", "rel"]
    failed = run(cmd, cwd=str(work), check=False)
    assert failed.returncode != 0 and "FileNotFoundError" in failed.stdout + failed.stderr
    assert (work / "outputs").exists()  # what the failed run leaves behind
    ok = run(cmd + ["hydra.run.dir=.", "hydra.output_subdir=null"], cwd=str(work))
    assert json_records(ok.stdout)


def test_installed_plugin_from_any_directory(data, tmp_path):
    """After `pip install -e .`, --user-dir takes the package's folder from any cwd."""
    import wce_fairseq

    pkg = os.path.dirname(wce_fairseq.__file__)
    p = train(data, str(tmp_path / "ck"), ["--max-epoch", "1", "--max-update", "3"], cwd=str(tmp_path), user_dir=pkg)
    assert json_records(p.stdout)


@pytest.fixture(scope="module")
def two_updates(data, tmp_path_factory):
    """A checkpoint folder after two updates (shared by the loading tests)."""
    ck = tmp_path_factory.mktemp("two_updates")
    train(data, str(ck), ["--max-epoch", "1", "--max-update", "2"])
    return ck


def test_checkpoint_loads_with_safe_torch_load(two_updates):
    """torch >= 2.6 loads with weights_only=True; the plugin allows exactly what
    fairseq checkpoints hold, so fairseq's own loader works."""
    ck = two_updates
    code = (
        "import torch, wce_fairseq, fairseq; wce_fairseq.register();"
        "from fairseq import checkpoint_utils;"
        f"s = checkpoint_utils.load_checkpoint_to_cpu({str(ck / 'checkpoint_last.pt')!r});"
        "print('loaded', sorted(s))"
    )
    p = run([tool("python"), "-c", code])
    assert "loaded" in p.stdout
    # without the plugin (and so its allow-list), torch's safe loading refuses the file
    bare = run([tool("python"), "-c", code.replace("wce_fairseq, ", "").replace("wce_fairseq.register();", "")],
               check=False)
    assert bare.returncode != 0 and "weights_only" in (bare.stdout + bare.stderr)


@pytest.mark.parametrize("order", ["wce_fairseq, fairseq", "fairseq, wce_fairseq"])
def test_from_pretrained_in_either_import_order(data, two_updates, order):
    """fairseq's hub interface loads a checkpoint trained with the plugin
    whichever of the two packages is imported first, and translates."""
    ck = two_updates
    code = (
        f"import {order}\n"
        "from fairseq.models.transformer import TransformerModel\n"
        f"m = TransformerModel.from_pretrained({str(ck)!r}, checkpoint_file='checkpoint_last.pt', "
        f"data_name_or_path={data!r}, source_lang='en', target_lang='ps')\n"
        "print('task', type(m.task).__name__, '|', m.translate('▁the ▁cat ▁sees ▁a ▁dog', beam=2))\n"
    )
    p = run([tool("python"), "-c", code])
    assert "task TranslationEncouragingTask |" in p.stdout and p.stdout.strip().split("|")[1].strip()


def test_eval_bleu_checkpoints_load_safely_and_resume(data, tmp_path):
    """--eval-bleu (the recipes' checkpoint selection) stores its n-gram counts
    as numpy int64 arrays in the checkpoint's metrics: safe loading must take
    them (resume and fairseq-generate), and still refuse arbitrary objects."""
    import numpy as np

    ck = tmp_path / "ck"
    bleu = ["--eval-bleu", "--eval-bleu-args", '{"beam": 2, "max_len_a": 1.2, "max_len_b": 10}',
            "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric"]
    p = train(data, str(ck), ["--max-epoch", "1", "--max-update", "3", *bleu])
    assert [r for r in json_records(p.stdout, "valid") if "bleu" in r]
    code = (
        "import torch, numpy, wce_fairseq; wce_fairseq.register();"
        f"s = torch.load({str(ck / 'checkpoint_best.pt')!r}, map_location='cpu');"
        "m = [x for x in s['extra_state']['metrics']['valid'] if x[1] == '_bleu_counts'];"
        "print('counts', type(m[0][3]['sum']).__name__, m[0][3]['sum'].dtype)"
    )
    assert "counts ndarray int64" in run([tool("python"), "-c", code]).stdout
    p = train(data, str(ck), ["--max-epoch", "2", "--max-update", "6", *bleu])  # resumes from checkpoint_last
    assert "loaded checkpoint" in (p.stdout + p.stderr).lower()
    import wce_fairseq

    wce_fairseq.register()
    torch.save({"x": np.array([object()], dtype=object)}, tmp_path / "obj.pt")
    if "weights_only" in torch.load.__code__.co_varnames:
        with pytest.raises(Exception):
            torch.load(tmp_path / "obj.pt", weights_only=True)
