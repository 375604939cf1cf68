"""tools.export: a checkpoint trained with the plugin, rewritten to fairseq's
stock task and criterion, decodes and validates where the plugin cannot be
imported, with the same hypotheses."""
import json
import os
import sys

import pytest
import torch

pytest.importorskip("fairseq")

from tests.helpers.cli import PLUGIN, at_once, run, tool, train  # noqa: E402

# fairseq's own command-line entry points, started in a process where
# `import wce_fairseq` fails: what a colleague without the plugin has.
WITHOUT_PLUGIN = ("import sys; sys.modules['wce_fairseq'] = None; import runpy; "
                  "sys.argv = sys.argv[1:]; runpy.run_module(sys.argv[0], run_name='__main__')")


def _without_plugin(module, *args):
    # torch >= 2.6 and any fairseq checkpoint, stock too
    return run([sys.executable, "-c", WITHOUT_PLUGIN, module, *args], check=False,
               env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})


def _hypotheses(text):
    return sorted(line for line in text.splitlines() if line.startswith("H-"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, toy_data):
    root = tmp_path_factory.mktemp("export")
    data = toy_data()
    ck = root / "ck"
    train(data, str(ck), ["--label-smoothing", "0.1", "--log-end", "0.75", "--bonus-schedule", "linear",
                          "--bonus-schedule-length", "50", "--max-epoch", "2"])
    return data, ck / "checkpoint_last.pt", root


@pytest.mark.slow
def test_exported_checkpoint_decodes_identically_without_the_plugin(trained):
    data, ckpt, root = trained
    out = root / "exported.pt"
    gen = ["--beam", "2", "--batch-size", "32", "--cpu", "--gen-subset", "valid"]
    p, mine = at_once(lambda: run([tool("python"), "-m", "wce_fairseq.tools.export", str(ckpt), str(out)]),
                      lambda: run([tool("fairseq-generate"), data, "--user-dir", PLUGIN, "--task",
                                   "translation_encouraging", "--path", str(ckpt), *gen]))
    assert "task translation, criterion label_smoothed_cross_entropy" in p.stdout
    theirs = _without_plugin("fairseq_cli.generate", data, "--task", "translation", "--path", str(out), *gen)
    assert theirs.returncode == 0, theirs.stderr[-3000:]
    assert "wce_fairseq" not in theirs.stderr
    assert _hypotheses(theirs.stdout) == _hypotheses(mine.stdout) and len(_hypotheses(mine.stdout)) > 20

    state = torch.load(out, map_location="cpu", weights_only=False)
    orig = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["cfg"]["task"]["_name"] == "translation" and state["cfg"]["common"]["user_dir"] is None
    assert state["cfg"]["criterion"] == {"_name": "label_smoothed_cross_entropy", "label_smoothing": 0.1,
                                         "report_accuracy": False, "ignore_prefix_size": 0, "sentence_avg": False}
    assert state["optimizer_history"][-1]["criterion_name"] == "LabelSmoothedCrossEntropyCriterion"
    assert all(torch.equal(state["model"][k], v) for k, v in orig["model"].items())
    assert state["model"].keys() == orig["model"].keys()


@pytest.mark.slow
def test_exported_checkpoint_validates_without_the_plugin(trained):
    """fairseq-validate needs the checkpoint's task and criterion: the original
    fails without the plugin, the export runs, and its nll (which the bonus does
    not change) equals the plugin's validation of the original."""
    data, ckpt, root = trained
    out = root / "exported_v.pt"
    common = ["--cpu", "--max-tokens", "1200", "--log-format", "json"]
    _, failing, mine = at_once(
        lambda: run([tool("python"), "-m", "wce_fairseq.tools.export", str(ckpt), str(out)]),
        lambda: _without_plugin("fairseq_cli.validate", data, "--task", "translation", "--path", str(ckpt), *common),
        lambda: run([tool("fairseq-validate"), data, "--user-dir", PLUGIN, "--task", "translation_encouraging",
                     "--path", str(ckpt), *common]))
    assert failing.returncode != 0 and "translation_encouraging" in failing.stderr
    theirs = _without_plugin("fairseq_cli.validate", data, "--task", "translation", "--path", str(out), *common)
    assert theirs.returncode == 0, theirs.stderr[-3000:]

    def record(p):
        line = [x for x in (p.stdout + p.stderr).splitlines() if '"valid_loss"' in x][-1]
        return json.loads(line[line.index("{"):])

    a, b = record(mine), record(theirs)
    assert float(b["valid_nll_loss"]) == pytest.approx(float(a["valid_nll_loss"]), abs=1e-3)
    assert "valid_bonus" in a and "valid_bonus" not in b


@pytest.mark.slow
def test_export_refuses_to_overwrite_its_input(trained):
    _, ckpt, _ = trained
    p = run([tool("python"), "-m", "wce_fairseq.tools.export", str(ckpt), str(ckpt)], check=False)
    assert p.returncode != 0 and "new file" in p.stderr


def _plugin_checkpoint(path):
    state = {"model": {"w": torch.arange(4.0)}, "cfg": {"task": {"_name": "translation_encouraging"},
                                                        "criterion": {"_name": "encouraging_ce", "bonus": "log"},
                                                        "common": {"user_dir": "wce_fairseq"}}}
    torch.save(state, path)
    return path.read_bytes()


def test_export_refuses_a_link_to_its_input(tmp_path):
    from wce_fairseq.tools.export import main

    ckpt = tmp_path / "checkpoint_last.pt"
    original = _plugin_checkpoint(ckpt)
    link = tmp_path / "model.pt"
    link.symlink_to(ckpt)
    with pytest.raises(SystemExit):
        main([str(ckpt), str(link)])
    assert ckpt.read_bytes() == original


def test_export_writes_through_a_temporary_file(tmp_path, monkeypatch):
    """An interrupted write leaves neither a partial output nor the temporary
    file; a link as the output is written through, and stays a link."""
    from wce_fairseq.tools import export

    ckpt = tmp_path / "checkpoint_last.pt"
    _plugin_checkpoint(ckpt)
    out = tmp_path / "exported.pt"
    real_save = torch.save

    def interrupted(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(export.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export.main([str(ckpt), str(out)])
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_last.pt"]

    monkeypatch.setattr(export.torch, "save", real_save)
    (tmp_path / "models").mkdir()
    out.symlink_to(tmp_path / "models" / "m.pt")
    export.main([str(ckpt), str(out)])
    assert out.is_symlink()
    state = torch.load(tmp_path / "models" / "m.pt")
    assert state["cfg"]["task"]["_name"] == "translation" and torch.equal(state["model"]["w"], torch.arange(4.0))
