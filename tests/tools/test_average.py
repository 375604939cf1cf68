"""tools/average.py: checkpoint averaging."""
import os

import torch


def test_average_by_update_in_fp32(tmp_path):
    from wce_fairseq.tools.average import last_checkpoints, main

    for ep, upd, val in ((1, 1000, 1.0), (2, 2000, 2.0), (2, 3000, 4.0), (3, 4000, 8.0)):
        torch.save({"model": {"w": torch.full((3,), val, dtype=torch.float16), "n": torch.tensor(upd)}, "cfg": None},
                   tmp_path / f"checkpoint_{ep}_{upd}.pt")
    for ep in (1, 2, 3):
        torch.save({"model": {"w": torch.full((3,), 100.0 * ep, dtype=torch.float16)}, "cfg": None},
                   tmp_path / f"checkpoint{ep}.pt")
    assert [os.path.basename(p) for p in last_checkpoints(str(tmp_path), 2)] == ["checkpoint_2_3000.pt",
                                                                                 "checkpoint_3_4000.pt"]
    assert [os.path.basename(p) for p in last_checkpoints(str(tmp_path), 2, "epoch")] == ["checkpoint2.pt",
                                                                                          "checkpoint3.pt"]
    main(["--dir", str(tmp_path), "--last", "3", "--out", str(tmp_path / "avg.pt")])
    avg = torch.load(tmp_path / "avg.pt")["model"]["w"]  # tensors only: safe loading takes it on any torch
    assert avg.dtype == torch.float32 and torch.allclose(avg, torch.full((3,), 14.0 / 3))
