"""``--criterion encouraging_ce``: label-smoothed cross-entropy plus the
encouraging bonus (docs/design.md §2–3), a drop-in for ``label_smoothed_cross_entropy``."""

import inspect
import logging
import math
import weakref
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq import utils
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics
from omegaconf import II

from ..functional import encouraging_loss_parts, resolve_impl
from ..ops.fused_linear import fused_linear_encouraging_loss
from ..ops.bonus import BONUS_SHAPES, BonusSpec, ELConfigError
from ..registry import register_once
from ..schedule import SCHEDULE_UNITS, SCHEDULES, BonusSchedule

EL_IMPLS = ("auto", "reference", "chunked", "triton")
logger = logging.getLogger(__name__)


@dataclass
class EncouragingCrossEntropyConfig(LabelSmoothedCrossEntropyCriterionConfig):
    bonus: ChoiceEnum(BONUS_SHAPES) = field(
        default="log",
        metadata={"help": "bonus shape B(p): log = conservative log(1-p) (the paper's), power = -p^gamma, "
                          "cos = cos(pi p)-1, none = plain label-smoothed CE"},
    )
    log_end: float = field(
        default=0.5,
        metadata={"help": "LE in (0, 1]: the log bonus follows log(1-p) up to p = LE and its tangent line "
                          "after it; 1 = unbounded log, clamped at 1-p = 1e-5 (paper: 0.5 for translation)"},
    )
    bonus_weight: float = field(
        default=1.0, metadata={"help": "rho >= 0: weight of the bonus term (before the schedule)"}
    )
    bonus_gamma: Optional[float] = field(
        default=None, metadata={"help": "gamma > 0 of the power bonus -p^gamma (required with --bonus power)"}
    )
    bonus_start: float = field(
        default=0.0,
        metadata={"help": "s in [0, 1): no bonus below p = s, B(p) - B(s) above (continuous at s)"},
    )
    bonus_smoothing: Optional[float] = field(
        default=None,
        metadata={"help": "lambda in [0, 1): label smoothing of the bonus target; unset = --label-smoothing"},
    )
    bonus_schedule: ChoiceEnum(SCHEDULES) = field(
        default="constant",
        metadata={"help": "bonus-weight schedule r(t), u = min(t/T, 1): constant 1, linear u, "
                          "exp exp((u-1)k), cos (cos(pi(1+u))+1)/2"},
    )
    bonus_schedule_unit: ChoiceEnum(SCHEDULE_UNITS) = field(
        default="update",
        metadata={"help": "t counts finished updates (update) or finished epochs (epoch)"},
    )
    bonus_schedule_length: Optional[float] = field(
        default=None, metadata={"help": "T > 0, in --bonus-schedule-unit units (required unless constant)"}
    )
    bonus_schedule_exp_ratio: float = field(
        default=5.0, metadata={"help": "k > 0 of the exp schedule"}
    )
    el_fuse_projection: bool = field(
        default=False,
        metadata={"help": "compute the decoder's output projection and the loss together, chunk by chunk, so "
                          "the N x V logits never exist (fairseq Transformer decoders without adaptive softmax)"},
    )
    el_impl: ChoiceEnum(EL_IMPLS) = field(
        default="auto",
        metadata={"help": "loss implementation: auto (fastest exact one for the device: triton on CUDA, "
                          "else chunked), chunked, triton, reference (slow, for checking)"},
    )
    # fairseq's --cpu: the device the loss will run on, for the start-up self-check
    cpu: bool = II("common.cpu")


# The task hooks every fairseq trainer calls, on any task: begin_epoch(epoch,
# model) at each epoch start (also after a resume), train_step(..., update_num)
# for each forward/backward with the number of updates already done, and
# optimizer_step(..., update_num) once an update is applied.
_PROGRESS_HOOKS = ("begin_epoch", "train_step", "optimizer_step")


def follow_training_progress(task, criterion) -> bool:
    """Make ``task`` tell ``criterion.set_progress`` the epoch and the update
    count, whatever the task class: its three trainer hooks are wrapped on this
    task *instance* (once; any number of criteria may listen). Returns False,
    changing nothing, for an object without those hooks."""
    if not all(callable(getattr(task, name, None)) for name in _PROGRESS_HOOKS):
        return False
    listeners = task.__dict__.get("_el_progress_listeners")
    if listeners is None:
        listeners = task.__dict__["_el_progress_listeners"] = weakref.WeakSet()

        def tell(**progress):
            for c in list(listeners):
                c.set_progress(**progress)

        def wrap(name, before=None, after=None):
            inner = getattr(task, name)
            sig = inspect.signature(inner)

            def hook(*args, **kwargs):
                arg = sig.bind(*args, **kwargs).arguments
                if before:
                    before(arg)
                out = inner(*args, **kwargs)
                if after:
                    after(arg)
                return out

            setattr(task, name, hook)

        wrap("begin_epoch", before=lambda a: tell(epoch=a["epoch"]))
        wrap("train_step", before=lambda a: tell(num_updates=a["update_num"]))
        # an applied update: validation and checkpoints that follow see it as done
        wrap("optimizer_step", after=lambda a: tell(num_updates=a["update_num"] + 1))
    listeners.add(criterion)
    return True


def _unwrap(model):
    """The fairseq model inside fairseq's distributed wrappers
    (``ModuleProxyWrapper`` around a DDP module): type checks must see it."""
    from fairseq.models import BaseFairseqModel

    while not isinstance(model, BaseFairseqModel) and isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module
    return model


def _plain_log_softmax(model) -> bool:
    """True when ``model.get_normalized_probs`` is a plain log-softmax of
    ``net_output[0]`` (stock fairseq models without adaptive softmax)."""
    from fairseq.models import BaseFairseqModel, FairseqDecoder

    model = _unwrap(model)
    dec = getattr(model, "decoder", None)
    if dec is None or getattr(dec, "adaptive_softmax", None) is not None:
        return False
    allowed = {BaseFairseqModel.get_normalized_probs}
    try:
        from fairseq.models.transformer import TransformerModelBase

        allowed.add(TransformerModelBase.get_normalized_probs)  # delegates to the scriptable one
    except ImportError:
        pass
    m, d = type(model), type(dec)
    return (
        m.get_normalized_probs in allowed
        and m.get_normalized_probs_scriptable is BaseFairseqModel.get_normalized_probs_scriptable
        and d.get_normalized_probs is FairseqDecoder.get_normalized_probs
        and d.get_normalized_probs_scriptable is FairseqDecoder.get_normalized_probs_scriptable
    )


def output_projection(model):
    """The decoder's output ``nn.Linear``, when logits = output_projection(features)
    and the distribution is their plain log-softmax; else a clear error."""
    from torch import nn

    model = _unwrap(model)
    dec = getattr(model, "decoder", None)
    proj = getattr(dec, "output_projection", None)
    if not isinstance(proj, nn.Linear) or not _plain_log_softmax(model):
        why = "it uses an adaptive softmax" if getattr(dec, "adaptive_softmax", None) is not None else (
            "its decoder has no plain nn.Linear output_projection followed by log-softmax")
        raise ValueError(f"--el-fuse-projection cannot be used with {type(model).__name__}: {why}. "
                         "It supports fairseq Transformer-style decoders; drop the flag for this model.")
    return proj


@register_once("criterion", "encouraging_ce", dataclass=EncouragingCrossEntropyConfig)
class EncouragingCrossEntropyCriterion(LabelSmoothedCrossEntropyCriterion):
    def __init__(
        self,
        task,
        sentence_avg,
        label_smoothing,
        ignore_prefix_size=0,
        report_accuracy=False,
        bonus="log",
        log_end=0.5,
        bonus_weight=1.0,
        bonus_gamma=None,
        bonus_start=0.0,
        bonus_smoothing=None,
        bonus_schedule="constant",
        bonus_schedule_unit="update",
        bonus_schedule_length=None,
        bonus_schedule_exp_ratio=5.0,
        el_fuse_projection=False,
        el_impl="auto",
        cpu=False,
    ):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        # Every option is checked here, at start-up, before any batch or checkpoint.
        if not isinstance(ignore_prefix_size, int) or ignore_prefix_size < 0:
            raise ValueError(f"--ignore-prefix-size must be an integer >= 0; got {ignore_prefix_size!r}")
        self.spec = BonusSpec(
            label_smoothing=label_smoothing,
            log_end=log_end,
            bonus=str(bonus),
            bonus_weight=bonus_weight,
            bonus_gamma=bonus_gamma,
            bonus_start=bonus_start,
            bonus_smoothing=bonus_smoothing,
        )
        self.schedule = BonusSchedule(
            str(bonus_schedule), str(bonus_schedule_unit), bonus_schedule_length, bonus_schedule_exp_ratio
        )
        self.fuse_projection = bool(el_fuse_projection)
        self.impl = str(el_impl)
        # Unknown, not runnable here, or failing its self-check on the run's
        # device: a forced choice fails now, auto settles on what works.
        device = torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")
        runs = resolve_impl(self.impl, device)
        logger.info("encouraging_ce: loss implementation %s (--el-impl %s) on %s%s", runs, self.impl, device,
                    ", self-check against the float64 reference passed" if runs == "triton" else "")
        self.epoch = 1
        self.num_updates = 0
        self._current = self.spec.with_weight(self.spec.bonus_weight * self.schedule.factor(0))
        if not follow_training_progress(task, self) and self.schedule.kind != "constant":
            raise ELConfigError(
                f"--bonus-schedule {self.schedule.kind} needs the training progress, but the task "
                f"{type(task).__name__} has no fairseq trainer hooks ({', '.join(_PROGRESS_HOOKS)}); "
                "use a fairseq task such as --task translation_encouraging, or --bonus-schedule constant")

    # -- progress (told by the task's trainer hooks, see follow_training_progress) --
    # t is what is finished when a loss is computed: updates already applied
    # (unit update), or fairseq's epoch number - 1 (unit epoch; an epoch's
    # validation belongs to it, as fairseq logs it).
    def set_progress(self, epoch: Optional[int] = None, num_updates: Optional[int] = None) -> None:
        if epoch is not None:
            self.epoch = int(epoch)
        if num_updates is not None:
            self.num_updates = int(num_updates)
        t = self.schedule.progress(self.epoch, self.num_updates)
        rho_t = self.spec.bonus_weight * self.schedule.factor(t)
        if rho_t != self._current.bonus_weight:
            self._current = self.spec.with_weight(rho_t)

    @property
    def bonus_weight_now(self) -> float:
        return self._current.bonus_weight

    # -- loss ----------------------------------------------------------------------
    def _inputs(self, model, net_output, sample):
        """(scores, target) flattened; scores are raw logits on the fast path,
        else the model's own normalised log-probabilities (softmax of those is
        the model's distribution, and the gradient through them is exact)."""
        target = model.get_targets(sample, net_output)
        if _plain_log_softmax(model):
            scores = net_output[0]
        else:
            scores = model.get_normalized_probs(net_output, log_probs=True, sample=sample)
        if self.ignore_prefix_size > 0:
            scores = scores[:, self.ignore_prefix_size :, :].contiguous()
            target = target[:, self.ignore_prefix_size :].contiguous()
        return scores.reshape(-1, scores.size(-1)), target.reshape(-1)

    def compute_el(self, model, net_output, sample, reduce=True, overwrite_logits=False):
        """The loss parts and diagnostics. With ``overwrite_logits`` (our own
        ``forward`` only) the gradient is written over the raw logits instead of
        a new N x V buffer, where they are raw logits: nothing reads them after
        the loss (the output projection's backward needs its input, not its
        output), so this saves the buffer and its first-touch cost."""
        scores, target = self._inputs(model, net_output, sample)
        options = {}
        if overwrite_logits and scores.requires_grad and _plain_log_softmax(model) and self.impl != "reference":
            options["inplace_backward"] = True
        return encouraging_loss_parts(
            scores,
            target,
            self._current,
            ignore_index=self.padding_idx,
            reduction="sum" if reduce else "none",
            impl=self.impl,
            want_stats=True,
            **options,
        )

    def compute_loss(self, model, net_output, sample, reduce=True):
        res = self.compute_el(model, net_output, sample, reduce)
        return res.loss, res.nll_loss

    def check_model(self, model) -> None:
        """Refuse, at start-up, a model that --el-fuse-projection cannot serve."""
        if self.fuse_projection:
            output_projection(model)

    def _fused(self, model, sample):
        proj = output_projection(model)
        features = model(**sample["net_input"], features_only=True)
        h = features[0]
        target = model.get_targets(sample, features)
        if self.ignore_prefix_size > 0:
            h = h[:, self.ignore_prefix_size :, :].contiguous()
            target = target[:, self.ignore_prefix_size :].contiguous()
        return fused_linear_encouraging_loss(
            h, proj.weight, proj.bias, target, self._current, ignore_index=self.padding_idx, reduction="sum",
            want_stats=True, impl=self.impl,
        )

    def forward(self, model, sample, reduce=True):
        if self.fuse_projection and reduce:
            res = self._fused(model, sample)
        else:
            net_output = model(**sample["net_input"])
            res = self.compute_el(model, net_output, sample, reduce=reduce, overwrite_logits=True)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        n_tok, sum_p, n_well, sum_margin, n_correct = res.stats.tolist()
        logging_output = {
            "loss": res.loss.data,
            "nll_loss": res.nll_loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
            # Sums, so that fairseq may add them up across workers.
            "el_bonus": res.bonus_loss.data.sum() if not reduce else res.bonus_loss.data,
            "el_ntok": n_tok,
            "el_rho": self._current.bonus_weight * n_tok,
            "el_sum_p": sum_p,
            "el_n_well": n_well,
            "el_sum_margin": sum_margin,
        }
        if self.report_accuracy:
            logging_output["n_correct"] = int(n_correct)
            logging_output["total"] = int(n_tok)
        return res.loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)

        def total(key):
            return utils.item(sum(log.get(key, 0) for log in logging_outputs))

        sample_size = total("sample_size")
        n = total("el_ntok")
        if sample_size > 0:
            metrics.log_scalar("bonus", total("el_bonus") / sample_size / math.log(2), sample_size, round=3)
        if n > 0:
            metrics.log_scalar("bonus_weight", total("el_rho") / n, n, round=4)
            metrics.log_scalar("target_prob", total("el_sum_p") / n, n, round=4)
            metrics.log_scalar("well_classified", total("el_n_well") / n, n, round=4)
            metrics.log_scalar("margin", total("el_sum_margin") / n, n, round=3)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
