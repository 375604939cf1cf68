"""The fairseq criterion against fairseq's own label-smoothed CE and its invariants."""
import math

import pytest
import torch

pytest.importorskip("fairseq")

from tests.helpers.fairseq_objects import make_criterion, make_model, make_sample, make_task, param_grads  # noqa: E402
from tests.helpers.reference import el_reference  # noqa: E402


@pytest.fixture(scope="module")
def task():
    return make_task()


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("impl", ["auto", "chunked", "reference"])
def test_weight_zero_equals_fairseq_label_smoothed_ce(task, eps, impl):
    model, sample = make_model(task), make_sample(task)
    stock = make_criterion(task, "label_smoothed_cross_entropy", label_smoothing=eps)
    ours = make_criterion(task, label_smoothing=eps, bonus_weight=0.0, el_impl=impl)
    l1, n1, log1 = stock(model, sample)
    l2, n2, log2 = ours(model, sample)
    torch.testing.assert_close(l2, l1, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(log2["nll_loss"], log1["nll_loss"], rtol=1e-6, atol=1e-5)
    assert n1 == n2
    # and the gradients w.r.t. the model match too
    g1 = param_grads(l1, model)
    l2, _, _ = ours(model, sample)
    g2 = param_grads(l2, model)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_loss_equals_reference_on_model_logits(task):
    model, sample = make_model(task), make_sample(task)
    crit = make_criterion(task, label_smoothing=0.1, log_end=0.75, bonus_weight=1.3)
    loss, _, log = crit(model, sample)
    logits = model(**sample["net_input"])[0]
    ref, nll, bonus = el_reference(logits.detach(), sample["target"], label_smoothing=0.1, log_end=0.75,
                                   bonus_weight=1.3, ignore_index=task.tgt_dict.pad())
    torch.testing.assert_close(loss.double(), ref.sum(), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(log["nll_loss"].double(), nll.sum(), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(log["el_bonus"].double(), bonus.sum(), rtol=1e-5, atol=1e-5)


def test_padded_batch_equals_sum_of_sentences(task):
    model = make_model(task)
    lengths = (6, 2, 4)
    batch = make_sample(task, lengths)
    crit = make_criterion(task, label_smoothing=0.1)
    total, _, _ = crit(model, batch)
    parts = 0.0
    for i, n in enumerate(lengths):
        T = n
        one = {
            "ntokens": n,
            "nsentences": 1,
            "net_input": {
                "src_tokens": batch["net_input"]["src_tokens"][i:i + 1, -T:],
                "src_lengths": torch.tensor([n]),
                "prev_output_tokens": batch["net_input"]["prev_output_tokens"][i:i + 1, :T],
            },
            "target": batch["target"][i:i + 1, :T],
        }
        parts = parts + crit(model, one)[0]
    torch.testing.assert_close(total, parts, rtol=1e-5, atol=1e-4)


def test_reduce_false_sums_to_reduced(task):
    model, sample = make_model(task), make_sample(task)
    crit = make_criterion(task, label_smoothing=0.1)
    reduced, _, _ = crit(model, sample, reduce=True)
    per_tok, _, log = crit(model, sample, reduce=False)
    assert per_tok.numel() == sample["target"].numel()
    torch.testing.assert_close(per_tok.sum(), reduced, rtol=1e-6, atol=1e-5)


def test_reduce_false_is_shaped_like_stock(task):
    """Per-token losses come back (N, 1), as label_smoothed_cross_entropy returns
    them (code written for the stock criterion indexes the second dimension)."""
    model, sample = make_model(task), make_sample(task)
    stock = make_criterion(task, "label_smoothed_cross_entropy", label_smoothing=0.1)
    ours = make_criterion(task, label_smoothing=0.1, bonus_weight=0.0)
    net_output = model(**sample["net_input"])
    l1, n1 = stock.compute_loss(model, net_output, sample, reduce=False)
    l2, n2 = ours.compute_loss(model, net_output, sample, reduce=False)
    assert l2.shape == l1.shape == (sample["target"].numel(), 1) and n2.shape == n1.shape
    torch.testing.assert_close(l2, l1, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(n2, n1, rtol=1e-6, atol=1e-5)
    loss, _, log = ours(model, sample, reduce=False)
    assert loss.shape == l1.shape and log["nll_loss"].shape == n1.shape


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_adaptive_softmax_evaluation_equals_stock(eps):
    """An adaptive softmax given the target fills only the target's cluster
    (other entries stay at log p = 0): the loss must normalise every row, as the
    stock criterion does, also in no-grad evaluation (validation)."""
    task = make_task(vocab=40)
    model, sample = make_model(task, adaptive=True), make_sample(task, (6, 4, 7))
    stock = make_criterion(task, "label_smoothed_cross_entropy", label_smoothing=eps)
    ours = make_criterion(task, label_smoothing=eps, bonus_weight=0.0)
    with torch.no_grad():
        l1, _, log1 = stock(model, sample)
        l2, _, log2 = ours(model, sample)
        lprobs = model.get_normalized_probs(model(**sample["net_input"]), log_probs=True)
    assert torch.allclose(lprobs.exp().sum(-1), torch.ones(()), atol=1e-5)  # a distribution per row
    torch.testing.assert_close(l2, l1, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(log2["nll_loss"], log1["nll_loss"], rtol=1e-6, atol=1e-4)
    ref, _, _ = el_reference(lprobs, sample["target"], label_smoothing=0.1, log_end=0.75,
                             ignore_index=task.tgt_dict.pad())
    with torch.no_grad():
        el = make_criterion(task, label_smoothing=0.1, log_end=0.75)(model, sample)[0]
    torch.testing.assert_close(el.double(), ref.sum(), rtol=1e-5, atol=1e-4)


def test_adaptive_softmax_trains_like_stock():
    """fairseq's adaptive softmax fails in backward (an in-place op on its
    log-softmax output); with the plugin loaded it trains, and at bonus weight 0
    the parameter gradients equal the stock criterion's."""
    task = make_task(vocab=40)
    model, sample = make_model(task, adaptive=True), make_sample(task, (6, 4, 7))
    model.train()
    stock = make_criterion(task, "label_smoothed_cross_entropy", label_smoothing=0.1)
    ours = make_criterion(task, label_smoothing=0.1, bonus_weight=0.0)
    g1 = param_grads(stock(model, sample)[0], model)
    g2 = param_grads(ours(model, sample)[0], model)
    assert any(float(g.abs().sum()) > 0 for g in g1)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("prefix", [0, 1, 2])
def test_report_accuracy_and_ignore_prefix_like_stock(task, prefix):
    model, sample = make_model(task), make_sample(task, (5, 4, 6))
    stock = make_criterion(task, "label_smoothed_cross_entropy", report_accuracy=True, ignore_prefix_size=prefix)
    ours = make_criterion(task, report_accuracy=True, ignore_prefix_size=prefix, bonus_weight=0.0)
    _, _, a = stock(model, sample)
    _, _, b = ours(model, sample)
    assert (a["n_correct"], a["total"]) == (b["n_correct"], b["total"])
    torch.testing.assert_close(b["loss"], a["loss"], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(b["nll_loss"], a["nll_loss"], rtol=1e-6, atol=1e-5)


def test_non_logit_models_use_their_own_normalisation(task):
    """A model whose distribution is not log_softmax(net_output[0]) goes
    through its own get_normalized_probs; loss and gradients then equal the
    stock criterion's at bonus weight 0, and the reference with the bonus."""
    from fairseq.models.transformer import TransformerModel

    from wce_fairseq.fairseq_models import plain_log_softmax as _plain_log_softmax

    class TemperatureModel(TransformerModel):
        def get_normalized_probs(self, net_output, log_probs, sample=None):
            lp = torch.log_softmax(net_output[0].float() / 2.0, dim=-1)
            return lp if log_probs else lp.exp()

    plain = make_model(task)
    assert _plain_log_softmax(plain)
    assert not _plain_log_softmax(make_model(task, adaptive=True))
    model = make_model(task)
    model.__class__ = TemperatureModel
    assert not _plain_log_softmax(model)
    sample = make_sample(task)

    stock = make_criterion(task, "label_smoothed_cross_entropy", label_smoothing=0.1)
    ours = make_criterion(task, label_smoothing=0.1, bonus_weight=0.0)
    l1 = stock(model, sample)[0]
    g1 = param_grads(l1, model)
    l2 = ours(model, sample)[0]
    g2 = param_grads(l2, model)
    torch.testing.assert_close(l2, l1, rtol=1e-6, atol=1e-5)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)

    loss = make_criterion(task, label_smoothing=0.1, log_end=0.75)(model, sample)[0]
    logits = model(**sample["net_input"])[0].detach()
    ref, _, _ = el_reference(logits / 2.0, sample["target"], label_smoothing=0.1, log_end=0.75,
                             ignore_index=task.tgt_dict.pad())
    torch.testing.assert_close(loss.double(), ref.sum(), rtol=1e-5, atol=1e-4)


def test_reduce_metrics_logs_summable_diagnostics(task):
    from fairseq.logging import metrics

    from wce_fairseq.criterions.encouraging_ce import EncouragingCrossEntropyCriterion

    model, sample = make_model(task), make_sample(task)
    crit = make_criterion(task, label_smoothing=0.1)
    _, _, log = crit(model, sample)
    with metrics.aggregate() as agg:
        EncouragingCrossEntropyCriterion.reduce_metrics([log, log])
        vals = agg.get_smoothed_values()
    n = 2 * float(log["el_ntok"])
    assert vals["loss"] == round(2 * float(log["loss"]) / (2 * log["sample_size"]) / math.log(2), 3)
    assert vals["bonus"] == round(2 * float(log["el_bonus"]) / (2 * log["sample_size"]) / math.log(2), 3)
    assert vals["target_prob"] == round(2 * float(log["el_sum_p"]) / n, 4)
    assert vals["margin"] == round(2 * float(log["el_sum_margin"]) / n, 3)
    assert vals["bonus_weight"] == 1.0
    for key in ("nll_loss", "ppl", "well_classified"):
        assert key in vals


@pytest.mark.parametrize("prefix", [0, 1])
def test_fused_projection_equals_unfused(task, prefix):
    model, sample = make_model(task), make_sample(task, (6, 2, 5))
    plain = make_criterion(task, label_smoothing=0.1, log_end=0.75, ignore_prefix_size=prefix)
    fused = make_criterion(task, label_smoothing=0.1, log_end=0.75, ignore_prefix_size=prefix,
                           el_fuse_projection=True)
    l1, _, log1 = plain(model, sample)
    g1 = param_grads(l1, model)
    l2, _, log2 = fused(model, sample)
    g2 = param_grads(l2, model)
    torch.testing.assert_close(l2, l1, rtol=1e-5, atol=1e-5)
    for k in ("nll_loss", "el_bonus", "el_ntok", "el_sum_p", "el_n_well", "el_sum_margin"):
        assert float(log2[k]) == pytest.approx(float(log1[k]), rel=1e-5, abs=1e-5), k
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fuse", [False, True])
def test_model_inside_fairseq_distributed_wrapper(task, fuse):
    """Multi-worker fairseq hands the criterion ModuleProxyWrapper(DDP(model)):
    the loss, the fast logits path and the fused projection must see through it
    (reading the wrapper's type instead would crash at the first step)."""
    from fairseq.distributed import ModuleProxyWrapper
    from torch import nn

    from wce_fairseq.fairseq_models import output_projection, plain_log_softmax as _plain_log_softmax

    class DataParallelLike(nn.Module):  # what DDP / legacy_ddp look like from outside
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    model, sample = make_model(task), make_sample(task, (6, 2, 5))
    wrapped = ModuleProxyWrapper(DataParallelLike(model))
    assert _plain_log_softmax(wrapped) and output_projection(wrapped) is model.decoder.output_projection
    crit = make_criterion(task, label_smoothing=0.1, log_end=0.75, el_fuse_projection=fuse)
    l1, _, log1 = crit(model, sample)
    g1 = param_grads(l1, model)
    l2, _, log2 = crit(wrapped, sample)
    g2 = param_grads(l2, model)
    assert float(l2) == float(l1) and float(log2["el_bonus"]) == float(log1["el_bonus"])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_fused_projection_refused_at_start_up_for_adaptive_softmax(task):
    from omegaconf import OmegaConf
    from fairseq.criterions import CRITERION_DATACLASS_REGISTRY

    task._model = make_model(task, adaptive=True)
    cfg = OmegaConf.structured(CRITERION_DATACLASS_REGISTRY["encouraging_ce"])
    cfg._name = "encouraging_ce"
    cfg.el_fuse_projection = True
    cfg.sentence_avg = False
    cfg.cpu = True
    with pytest.raises(ValueError, match=r"--el-fuse-projection .*adaptive softmax"):
        task.build_criterion(cfg)
    task._model = make_model(task)
    assert task.build_criterion(cfg).fuse_projection


def _confident_logits(task, sample, seed=4):
    """Logits as a trained model's: the target at p well past LE = 0.75 on
    every other token, in the middle of the curve on a few, confidently wrong
    on a few (set directly: the tiny model never gets there)."""
    g = torch.Generator().manual_seed(seed)
    t = sample["target"]
    z = torch.randn(*t.shape, len(task.tgt_dict), generator=g, dtype=torch.float64)
    flat, tf = z.view(-1, z.shape[-1]), t.reshape(-1)
    rows = torch.arange(tf.numel())
    flat[rows[::2], tf[::2]] += 9.0  # p ≈ 0.99
    flat[rows[1::6], tf[1::6]] += 4.5  # p in the middle
    flat[rows[3::6], (tf[3::6] + 1) % z.shape[-1]] += 9.0  # a wrong argmax
    return z


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("impl", ["auto", "chunked", "reference"])
def test_gradient_with_the_bonus_on_equals_autograd_of_the_float64_reference(task, impl, dtype):
    """The criterion's loss and its gradient with respect to the logits, past
    p = LE and with smoothing on both terms, against autograd of the
    independent float64 reference on the same logits. Tolerance: the input
    dtype's own rounding of the float64 gradient (one ulp), plus fp32's error
    on the terms an entry is made of."""
    sample = make_sample(task)
    z64 = _confident_logits(task, sample)
    crit = make_criterion(task, label_smoothing=0.1, log_end=0.75, bonus_weight=1.3, el_impl=impl)

    x = z64.to(dtype).requires_grad_(True)
    res = crit.compute_el(make_model(task), (x, None), sample)
    res.loss.backward()
    xr = x.detach().double().requires_grad_(True)
    ref, _, _ = el_reference(xr, sample["target"], label_smoothing=0.1, log_end=0.75, bonus_weight=1.3,
                             ignore_index=task.tgt_dict.pad())
    ref.sum().backward()
    p_t = torch.softmax(xr.detach(), -1).gather(-1, sample["target"].unsqueeze(-1))
    assert float((p_t > 0.75).float().mean()) > 0.3  # a good share of tokens on the tangent
    torch.testing.assert_close(res.loss.double(), ref.sum().detach(), rtol=1e-6, atol=1e-5)
    exact = xr.grad
    ulp = torch.finfo(dtype).eps * exact.abs() + torch.finfo(dtype).tiny
    terms = 2.0 ** -20 * (exact.abs() + torch.softmax(xr.detach(), -1) + 1.0)
    err = (x.grad.double() - exact).abs()
    assert x.grad.dtype == dtype
    assert bool((err <= ulp + terms).all()), float((err - ulp - terms).max())
