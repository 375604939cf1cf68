"""benchmarks/gpu_check.py is run by hand on a GPU machine; its --smoke mode
runs every part at tiny sizes on the CPU, so the script cannot rot unseen,
and the budget of the full run, from the parts' costs measured by that smoke
run, must fit four minutes."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("fairseq")
from tests.helpers.cli import REPO, tool_env  # noqa: E402

pytestmark = pytest.mark.slow
SCRIPT = os.path.join(REPO, "benchmarks", "gpu_check.py")


def test_gpu_check_smoke_and_budget(tmp_path):
    p = subprocess.run([sys.executable, SCRIPT, "--smoke", "--out", str(tmp_path)], capture_output=True, text=True,
                       env=tool_env(), timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "[budget]" in p.stderr.splitlines()[0]  # printed before anything runs
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    # the counts behind the script's verdicts, not its verdicts: every one is known
    checked = res["correctness"][1:]
    assert res["correctness"][0]["reason"] is None and checked
    for r in checked:
        assert (r["beyond_one_rounding"], r["non_finite"], r["extra_flushes"]) == (0, 0, 0), r
        assert r["loss_rel_err"] <= 1e-5, r
    assert all(r["ok"] for r in res["syncs"])  # on the CPU: the one row saying the GPU check needs CUDA
    assert {r["provider"] for r in res["timing"]} >= {"stock_ls_ce", "chunked", "fused", "4 passes at copy bandwidth"}
    assert [r["criterion"] for r in res["train"]] == ["stock LS-CE", "EL"]
    assert all(r["wps"] > 0 for r in res["train"]), res["train"]
    assert set(res["part_s"]) == {"correctness", "no host syncs", "loss timing", "fairseq-train"}
    assert "| check | result | detail |" in p.stdout and "words/s" in p.stdout
    b = subprocess.run([sys.executable, SCRIPT, "--budget", "--budget-from", str(tmp_path / "gpu_check.json")],
                       capture_output=True, text=True, env=tool_env(), timeout=300)
    budget = json.loads(b.stdout.strip().splitlines()[-1])
    assert budget["total_s"] <= budget["limit_s"] == 240.0, budget
