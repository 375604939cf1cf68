"""Safe loading (torch.load(weights_only=True), the default from torch 2.6)
takes what fairseq checkpoints hold -- argparse.Namespace and, with
--eval-bleu, numeric numpy arrays and scalars in the saved metrics -- and
still refuses anything else (here: a numpy object array)."""
import argparse

import numpy as np
import pytest
import torch

from wce_fairseq.checkpoint_compat import allow_fairseq_checkpoints

SAFE = "weights_only" in torch.load.__code__.co_varnames and hasattr(torch.serialization, "add_safe_globals")


@pytest.mark.skipif(not SAFE, reason="this torch has no safe loading to allow anything in")
@pytest.mark.parametrize("value", [
    argparse.Namespace(lr=[0.1], arch="transformer"),
    np.array([511, 495, 479, 463], dtype=np.int64),   # fairseq's _bleu_counts / _bleu_totals
    np.array([[1.5, 2.5]], dtype=np.float32),
    np.float64(35.5),
    np.int64(7),
])
def test_fairseq_checkpoint_contents_load_safely(tmp_path, value):
    allow_fairseq_checkpoints()
    torch.save({"extra_state": {"metrics": {"valid": [(0, "_bleu_counts", "AverageMeter", {"sum": value})]}}},
               tmp_path / "c.pt")
    got = torch.load(tmp_path / "c.pt", weights_only=True)["extra_state"]["metrics"]["valid"][0][3]["sum"]
    if isinstance(value, argparse.Namespace):
        assert vars(got) == vars(value)
    else:
        assert np.array_equal(np.asarray(got), np.asarray(value)) and np.asarray(got).dtype == np.asarray(value).dtype


@pytest.mark.skipif(not SAFE, reason="this torch has no safe loading")
def test_other_objects_are_still_refused(tmp_path):
    allow_fairseq_checkpoints()
    torch.save({"x": np.array([object()], dtype=object)}, tmp_path / "o.pt")
    with pytest.raises(Exception, match="(?i)weights only|unsupported|global"):
        torch.load(tmp_path / "o.pt", weights_only=True)
