"""benchmarks/gpu_check.py is run by hand on a GPU machine; its --smoke mode
runs every part at tiny sizes on the CPU so the script cannot rot unseen."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("fairseq")
from cli_helpers import REPO, tool_env  # noqa: E402

pytestmark = pytest.mark.slow


def test_gpu_check_smoke(tmp_path):
    p = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "gpu_check.py"), "--smoke",
                        "--out", str(tmp_path)], capture_output=True, text=True, env=tool_env(), timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert res["correctness"] and all(r["ok"] for r in res["correctness"])
    assert {r["provider"] for r in res["timing"]} >= {"stock_ls_ce", "chunked", "fused"}
    assert [r["criterion"] for r in res["train"]] == ["stock LS-CE", "EL"]
    assert all(r["wps"] > 0 for r in res["train"]), res["train"]
    assert "| check | result | detail |" in p.stdout and "words/s" in p.stdout
