"""tools/average.py: checkpoint averaging."""
import os

import pytest
import torch


def _write(tmp_path):
    """Four update checkpoints and three epoch checkpoints; each carries its
    own training state (``extra_state``) and task state."""
    for ep, upd, val in ((1, 1000, 1.0), (2, 2000, 2.0), (2, 3000, 4.0), (3, 4000, 8.0)):
        torch.save({"model": {"w": torch.full((3,), val, dtype=torch.float16), "n": torch.tensor(upd)},
                    "extra_state": {"num_updates": upd}, "task_state": {"progress": (ep, upd)}, "cfg": None},
                   tmp_path / f"checkpoint_{ep}_{upd}.pt")
    for ep in (1, 2, 3):
        torch.save({"model": {"w": torch.full((3,), 100.0 * ep, dtype=torch.float16)}, "cfg": None,
                    "extra_state": {"epoch": ep}}, tmp_path / f"checkpoint{ep}.pt")


def test_average_by_update_in_fp32_keeps_the_newest_state(tmp_path):
    from wce_fairseq.tools.average import last_checkpoints, main

    _write(tmp_path)
    assert [os.path.basename(p) for p in last_checkpoints(str(tmp_path), 2)] == ["checkpoint_2_3000.pt",
                                                                                 "checkpoint_3_4000.pt"]
    assert [os.path.basename(p) for p in last_checkpoints(str(tmp_path), 2, "epoch")] == ["checkpoint2.pt",
                                                                                          "checkpoint3.pt"]
    main(["--dir", str(tmp_path), "--last", "3", "--out", str(tmp_path / "avg.pt")])
    avg = torch.load(tmp_path / "avg.pt")  # tensors and plain types only: safe loading takes it on any torch
    assert avg["model"]["w"].dtype == torch.float32 and torch.equal(avg["model"]["w"], torch.full((3,), 14.0 / 3))
    # fairseq's script keeps the newest checkpoint's fields: its update count, task state, integer buffers
    assert avg["extra_state"] == {"num_updates": 4000}
    assert avg["task_state"] == {"progress": (3, 4000)}
    assert int(avg["model"]["n"]) == 4000


@pytest.mark.parametrize("last, words", [("0", "at least 1"), ("-2", "at least 1"),
                                         ("5", "needs 5 checkpoint_E_U.pt files"), ("50", "found 4")])
def test_bad_last_is_refused(tmp_path, last, words):
    from wce_fairseq.tools.average import main

    _write(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["--dir", str(tmp_path), "--last", last, "--out", str(tmp_path / "avg.pt")])
    assert words in str(e.value)
    assert not (tmp_path / "avg.pt").exists()
