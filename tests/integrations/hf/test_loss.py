"""integrations/hf/loss.py: the loss as a compute_loss_func, called
directly on the outputs of tiny models (no Trainer): the label shift, the
divisor, fairseq's smoothing, the float64 reference."""
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers.reference import el_reference
from wce_fairseq.ops.bonus import ELConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_imports_and_runs_without_transformers_or_fairseq():
    code = ("import sys; sys.modules['transformers'] = None; sys.modules['fairseq'] = None\n"
            "import torch\n"
            "from wce_fairseq.integrations.hf import encouraging_loss_func, use_encouraging_loss\n"
            "fn = encouraging_loss_func(label_smoothing=0.1, shift_labels=False)\n"
            "loss = fn({'logits': torch.randn(2, 3, 11)}, torch.tensor([[1, 2, -100], [3, 4, 5]]))\n"
            "assert torch.isfinite(loss), loss\n"
            "try:\n    fn.callback()\nexcept ImportError as e:\n    print('callback needs transformers')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "callback needs transformers" in p.stdout


@pytest.mark.parametrize("kw, words", [
    (dict(log_end=1.5), ["log_end", "(0, 1]"]),
    (dict(bonus_gamma=2.0), ["bonus_gamma", "--bonus power"]),
    (dict(bonus_schedule="linear", bonus_schedule_exp_ratio=3.0), ["bonus_schedule_exp_ratio", "exp"]),
    (dict(bonus_schedule="warmup"), ["bonus_schedule", "constant"]),
    (dict(impl="cuda"), ["impl"]),
    (dict(shift_labels="yes"), ["shift_labels", "True, False or None"]),
])
def test_bad_options_fail_before_training(kw, words):
    from wce_fairseq.integrations.hf import encouraging_loss_func

    with pytest.raises(ELConfigError) as e:
        encouraging_loss_func(**kw)
    for w in words:
        assert w in str(e.value)


def test_an_undecided_shift_is_refused_at_the_first_call():
    from wce_fairseq.integrations.hf import encouraging_loss_func

    fn = encouraging_loss_func()
    with pytest.raises(ELConfigError, match="use_encouraging_loss|shift_labels=True or False"):
        fn({"logits": torch.randn(2, 3, 11)}, torch.tensor([[1, 2, -100], [3, 4, 5]]))


def test_shifted_labels_are_padded_never_the_logits_copied():
    from wce_fairseq.integrations.hf.loss import shifted

    labels = torch.tensor([[5, 6, 7, -100], [8, 9, -100, -100]])
    assert shifted(labels).tolist() == [[6, 7, -100, -100], [9, -100, -100, -100]]


transformers = pytest.importorskip("transformers")

from tests.helpers import hf_models as H  # noqa: E402


@pytest.mark.parametrize("kind", H.SHAPES)
def test_weight_zero_equals_the_model_s_own_loss(kind):
    """ρ = 0, ε = 0: the model's own cross-entropy (which shifts causal LMs'
    labels itself), with the shift decided from the model."""
    from wce_fairseq.integrations.hf import encouraging_loss_func

    m = H.model(kind)
    b = H.batch(kind, 5)
    own = m(**b).loss  # mean over the scored labels
    inputs = {k: v for k, v in b.items() if k != "labels"}
    fn = encouraging_loss_func(bonus_weight=0.0)
    fn.bind_model(m)
    assert fn.shift_labels == (kind in H.CAUSAL)
    torch.testing.assert_close(fn(m(**inputs), b["labels"]), own, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["llama", "marian"])
def test_encouraging_loss_equals_the_float64_reference(kind):
    """With smoothing and the bonus on, on the model's own logits: the float64
    reference of the scored positions, divided by their count or by
    num_items_in_batch (a tensor or an int, as the Trainer may pass)."""
    from wce_fairseq.integrations.hf import encouraging_loss_func

    m = H.model(kind)
    b = H.batch(kind, 6)
    out = m(**{k: v for k, v in b.items() if k != "labels"})
    logits, labels = out.logits.detach(), b["labels"]
    if kind in H.CAUSAL:  # position i scores label i + 1: written out here, independently of the package
        logits, labels = logits[:, :-1], labels[:, 1:]
    ref = el_reference(logits, labels, label_smoothing=0.1, log_end=0.75)[0].sum()
    fn = encouraging_loss_func(label_smoothing=0.1, log_end=0.75)
    fn.bind_model(m)
    n = int((labels != -100).sum())
    torch.testing.assert_close(fn(out, b["labels"]).double(), ref / n, rtol=1e-6, atol=1e-6)
    for total in (torch.tensor(40), 40):
        torch.testing.assert_close(fn(out, b["labels"], num_items_in_batch=total).double(), ref / 40,
                                   rtol=1e-6, atol=1e-6)


def test_smoothing_is_fairseq_s_not_hf_s():
    """At bonus weight 0 with ε = 0.1: fairseq's label-smoothed CE (ε/(V-1)),
    not the Trainer's label smoother (ε/V)."""
    from transformers.trainer_pt_utils import LabelSmoother

    from wce_fairseq.integrations.hf import encouraging_loss_func

    labels = H.batch("marian", 5)["labels"]
    logits = torch.randn(*labels.shape, H.V, generator=torch.Generator().manual_seed(0))
    logits.scatter_add_(-1, labels.clamp_min(0).unsqueeze(-1), torch.full((*labels.shape, 1), 8.0))  # confident
    out = {"logits": logits}
    ours = encouraging_loss_func(label_smoothing=0.1, bonus_weight=0.0, shift_labels=False)(out, labels)
    ref, _, _ = el_reference(logits, labels, label_smoothing=0.1, bonus_weight=0.0)
    torch.testing.assert_close(ours.double(), ref.sum() / (labels != -100).sum(), rtol=1e-6, atol=1e-6)
    hf = LabelSmoother(epsilon=0.1)(out, labels)
    # the two conventions differ by ε(1/(V-1) - 1/V)·Σ_v(-log p_v) per token: far above rounding here
    assert abs(float(hf) - float(ours)) > 1e-3
