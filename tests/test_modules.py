"""wce_fairseq.modules: the nn.Module wrapper."""
import torch

from tests.helpers.data import make_inputs
from wce_fairseq.functional import IMPLEMENTATIONS, encouraging_loss
from wce_fairseq.modules import EncouragingLoss


def test_module_wrapper_and_signature():
    import inspect

    sig = inspect.signature(encouraging_loss)
    assert list(sig.parameters) == [
        "logits", "target", "label_smoothing", "log_end", "bonus", "bonus_weight", "bonus_gamma",
        "bonus_start", "bonus_smoothing", "ignore_index", "reduction", "impl",
    ]
    assert {"auto", "reference"} <= set(IMPLEMENTATIONS)
    logits, target = make_inputs((5, 20), torch.float32, 17)
    m = EncouragingLoss(label_smoothing=0.1, log_end=0.75, reduction="sum")
    torch.testing.assert_close(m(logits, target), encouraging_loss(logits, target, label_smoothing=0.1,
                                                                   log_end=0.75, reduction="sum"))
