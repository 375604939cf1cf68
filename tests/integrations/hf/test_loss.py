"""integrations/hf/loss.py: the loss as a compute_loss_func, called
directly on the outputs of tiny models (no Trainer): the label shift, the
divisor, fairseq's smoothing, the float64 reference."""
import math
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
    with pytest.raises(ELConfigError, match=r"^the encouraging loss does not know whether to shift the labels "
                                            r"\(causal LM: yes; encoder-decoder: no\)"):
        fn({"logits": torch.randn(2, 3, 11)}, torch.tensor([[1, 2, -100], [3, 4, 5]]))


def test_shifted_labels_are_padded_never_the_logits_copied():
    from wce_fairseq.integrations.hf.loss import shifted

    labels = torch.tensor([[5, 6, 7, -100], [8, 9, -100, -100]])
    assert shifted(labels).tolist() == [[6, 7, -100, -100], [9, -100, -100, -100]]


try:
    import transformers
except ImportError:  # the tests above and below that build no model run without it
    transformers = None
needs_transformers = pytest.mark.skipif(transformers is None, reason="transformers is not installed")

from tests.helpers import hf_models as H  # noqa: E402  (imports transformers only when a model is built)


@needs_transformers
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


@needs_transformers
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


@needs_transformers
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


def _fn(**kw):
    from wce_fairseq.integrations.hf import encouraging_loss_func

    return encouraging_loss_func(**kw)


def test_the_shift_is_decided_from_the_model_s_config():
    from types import SimpleNamespace

    from wce_fairseq.integrations.hf.loss import shift_for

    assert shift_for(SimpleNamespace(config=SimpleNamespace())) is True  # no is_encoder_decoder: a causal LM
    assert shift_for(SimpleNamespace(config=SimpleNamespace(is_encoder_decoder=True))) is False
    with pytest.raises(ELConfigError, match="^cannot tell whether SimpleNamespace is a causal LM"):
        shift_for(SimpleNamespace())


def _confident(labels, V=11, seed=0):
    """Logits with every scored label at p ≈ 0.97 (well classified), as float64."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(*labels.shape, V, generator=g, dtype=torch.float64)
    z.scatter_add_(-1, labels.clamp_min(0).unsqueeze(-1), torch.full((*labels.shape, 1), 6.0, dtype=torch.float64))
    return z


def test_outputs_as_a_mapping_an_object_or_a_tuple_and_the_shift_override():
    """The logits are read from outputs["logits"] (dict or ModelOutput) or
    outputs[0] (a tuple); a shift passed at the call (as the label smoother's
    caller does) overrides the function's."""
    labels = torch.tensor([[1, 2, 3, -100], [4, 5, -100, -100]])
    z = _confident(labels).float()
    fn = _fn(shift_labels=True)
    want = fn({"logits": z}, labels)
    assert fn((z, "other"), labels) == want
    assert fn(transformers_like_output(z), labels) == want
    ref = el_reference(z, labels)[0].sum() / (labels != -100).sum()  # not shifted
    torch.testing.assert_close(fn({"logits": z}, labels, shift_labels=False).double(), ref, rtol=1e-6, atol=1e-6)


def transformers_like_output(z):
    class Output:
        def __init__(self, logits):
            self.logits = logits

        def keys(self):
            return ["logits"]

        def __getitem__(self, k):
            return getattr(self, k)

    return Output(z)


def test_the_implementation_asked_for_is_the_one_that_runs():
    """impl="reference" computes in float64 (float64 logits give a float64 loss); the default in fp32."""
    labels = torch.tensor([[1, 2, -100]])
    z = _confident(labels)
    assert _fn(shift_labels=False, impl="reference")({"logits": z}, labels).dtype == torch.float64
    assert _fn(shift_labels=False)({"logits": z}, labels).dtype == torch.float32


@pytest.mark.parametrize("count", [1, torch.tensor(1)])
def test_a_count_of_one_divides_by_one(count):
    labels = torch.tensor([[3, -100, -100]])
    z = _confident(labels).float()
    ref = el_reference(z, labels, label_smoothing=0.1)[0].sum()
    fn = _fn(shift_labels=False, label_smoothing=0.1)
    for n in (None, count):
        torch.testing.assert_close(fn({"logits": z}, labels, num_items_in_batch=n).double(), ref, rtol=1e-6, atol=1e-6)


def test_a_tensor_count_is_never_read_by_the_host(monkeypatch):
    from tests.helpers.sync_counter import SyncCounter

    labels = torch.tensor([[3, 4, -100]])
    z = _confident(labels).float()
    fn = _fn(shift_labels=False)
    counter = SyncCounter(monkeypatch)
    fn({"logits": z}, labels, num_items_in_batch=torch.tensor(7))
    monkeypatch.undo()
    assert [c for c in counter.calls if "integrations" in c] == []


def test_diagnostics_are_token_weighted_means_of_every_call_since_the_last_read():
    """Two batches (3 and 1 scored tokens): the means over the 4 tokens, each
    value from a direct computation; read once, then empty; every token ignored
    adds nothing."""
    fn = _fn(shift_labels=False, label_smoothing=0.1, bonus_weight=2.0)
    batches = [torch.tensor([[1, 2, 3, -100]]), torch.tensor([[-100, 5, -100, -100]])]
    p, well, margin, bonus, n = 0.0, 0.0, 0.0, 0.0, 0
    for i, labels in enumerate(batches):
        z = _confident(labels, seed=i)
        z[0, 0, 4] += 9.0 if i == 0 else 0.0  # one wrong, confident row: not well classified
        fn({"logits": z.float()}, labels)
        for pos, y in enumerate(labels[0].tolist()):
            if y < 0:
                continue
            row = z[0, pos].float().double()
            pt = float(torch.softmax(row, 0)[y])
            p, well, n = p + pt, well + (pt > 0.5), n + 1
            margin += float(row[y] - torch.cat([row[:y], row[y + 1:]]).max())
        bonus += float(el_reference(z.float(), labels, label_smoothing=0.1, bonus_weight=2.0)[2].sum())
    got = fn.diagnostics()
    want = {"bonus_weight": 2.0, "target_prob": p / n, "well_classified": well / n, "margin": margin / n,
            "bonus": bonus / n}
    assert got.keys() == want.keys() and well == 3 and n == 4
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-6), k
    assert fn.diagnostics() == {}
    fn({"logits": _confident(batches[1]).float()}, torch.full((1, 4), -100))
    assert fn.diagnostics() == {}
    # one token; read without a reset, twice
    fn({"logits": _confident(batches[1]).float()}, batches[1])
    once = fn.diagnostics(reset=False)
    assert once and fn.diagnostics(reset=False) == once == fn.diagnostics() and fn.diagnostics() == {}


def test_progress_and_the_schedule_s_length():
    import sys as _sys

    fn = _fn(shift_labels=False, bonus_schedule="linear", bonus_schedule_unit="epoch", bonus_weight=3.0)
    fn.fit_schedule_to(max_steps=100, num_train_epochs=4)
    fn.set_progress(40)  # no epoch given: none finished
    assert fn.bonus_weight_now == 0.0
    fn.set_progress(40, epoch=2.5)  # two epochs finished of four
    assert fn.bonus_weight_now == 1.5
    for bad in (0, _sys.maxsize):  # nothing to span: no epochs, or the Trainer's "unknown"
        with pytest.raises(ELConfigError, match="without bonus_schedule_length spans the run, whose length in "
                                                "epochs the Trainer does not know"):
            _fn(shift_labels=False, bonus_schedule="cos", bonus_schedule_unit="epoch").fit_schedule_to(10, bad)
    one = _fn(shift_labels=False, bonus_schedule="linear")
    one.fit_schedule_to(max_steps=1, num_train_epochs=1)  # a one-update run
    one.set_progress(1)
    assert one.bonus_weight_now == 1.0
    exp = _fn(shift_labels=False, bonus_schedule="exp", bonus_schedule_exp_ratio=3.0)
    exp.fit_schedule_to(max_steps=10, num_train_epochs=1)
    exp.set_progress(5)
    assert exp.bonus_weight_now == pytest.approx(math.exp((0.5 - 1.0) * 3.0))


@pytest.mark.parametrize("opts", [
    dict(label_smoothing=0.2, bonus="power", bonus_weight=2.0, bonus_gamma=0.5, bonus_start=0.1,
         bonus_smoothing=0.05),
    dict(label_smoothing=0.1, log_end=0.75, bonus="log", bonus_weight=0.5, bonus_start=0.2, bonus_smoothing=0.0),
    dict(label_smoothing=0.1, bonus="cos", bonus_weight=1.5),
])
def test_every_loss_option_reaches_the_loss(opts):
    """Each option, none at its default, against the float64 reference given
    the same options."""
    g = torch.Generator().manual_seed(5)
    z = torch.randn(2, 6, 13, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 13, (2, 6), generator=g)
    labels[0, :2] = -100
    loss = _fn(shift_labels=False, **opts)({"logits": z.float()}, labels)
    ref = el_reference(z, labels, **opts)[0].sum() / (labels != -100).sum()
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind, want", [("linear", 0.0), ("cos", 0.0), ("exp", 3.0 * math.exp(-2.0))])
def test_a_schedule_starts_at_its_value_at_zero(kind, want):
    """Before any progress (an evaluation before training), rho_0 = rho r(0)."""
    for length in (None, 10):
        fn = _fn(shift_labels=False, bonus_weight=3.0, bonus_schedule=kind, bonus_schedule_length=length,
                 **(dict(bonus_schedule_exp_ratio=2.0) if kind == "exp" else {}))
        assert fn.bonus_weight_now == pytest.approx(want, abs=1e-15)
