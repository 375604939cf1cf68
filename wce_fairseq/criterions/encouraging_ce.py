"""``--criterion encouraging_ce``: label-smoothed cross-entropy plus the
encouraging bonus (docs/design.md), a drop-in for ``label_smoothed_cross_entropy``."""

import logging
import math
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

from ..fairseq_models import output_projection, plain_log_softmax
from ..functional import IMPL_NAMES, encouraging_loss_parts, resolve_impl
from ..ops.bonus import BONUS_SHAPES, DEFAULT_LOG_END, BonusSpec, ELConfigError
from ..ops.fused_linear import fused_linear_encouraging_loss
from ..progress import HOOKS, follow_training_progress, saved_progress
from ..registry import register_once
from ..schedule import DEFAULT_EXP_RATIO, DEFAULT_UNIT, SCHEDULE_UNITS, SCHEDULES, BonusSchedule

logger = logging.getLogger(__name__)


@dataclass
class EncouragingCrossEntropyConfig(LabelSmoothedCrossEntropyCriterionConfig):
    bonus: ChoiceEnum(BONUS_SHAPES) = field(
        default="log",
        metadata={"help": "bonus shape B(p): log = conservative log(1-p) (the paper's), power = -p^gamma, "
                          "cos = cos(pi p)-1, none = plain label-smoothed CE"},
    )
    log_end: float = field(
        default=DEFAULT_LOG_END,
        metadata={"help": "LE in (0, 1], --bonus log only: the bonus follows log(1-p) up to p = LE and its "
                          "tangent line after it; 1 = unbounded log, clamped at 1-p = 1e-5 (paper: 0.5)"},
    )
    bonus_weight: float = field(
        default=1.0, metadata={"help": "rho >= 0: weight of the bonus term (before the schedule)"}
    )
    bonus_gamma: Optional[float] = field(
        default=None, metadata={"help": "gamma > 0 of the power bonus -p^gamma (required with --bonus power, refused otherwise)"}
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
        default=DEFAULT_UNIT,
        metadata={"help": "t counts finished updates (update) or finished epochs (epoch); with a schedule only"},
    )
    bonus_schedule_length: Optional[float] = field(
        default=None, metadata={"help": "T > 0, in --bonus-schedule-unit units (required with a schedule, refused without)"}
    )
    bonus_schedule_exp_ratio: float = field(
        default=DEFAULT_EXP_RATIO, metadata={"help": "k > 0 of the exp schedule (--bonus-schedule exp only)"}
    )
    el_fuse_projection: bool = field(
        default=False,
        metadata={"help": "compute the decoder's output projection and the loss together, chunk by chunk, so "
                          "the N x V logits never exist (fairseq Transformer decoders without adaptive softmax)"},
    )
    el_impl: ChoiceEnum(IMPL_NAMES) = field(
        default="auto",
        metadata={"help": "loss implementation: auto (fastest exact one for the device: triton on CUDA, "
                          "else chunked), chunked, triton, reference (slow, for checking)"},
    )
    # fairseq's --cpu: the device the loss will run on, for the start-up self-check
    cpu: bool = II("common.cpu")


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
        log_end=DEFAULT_LOG_END,
        bonus_weight=1.0,
        bonus_gamma=None,
        bonus_start=0.0,
        bonus_smoothing=None,
        bonus_schedule="constant",
        bonus_schedule_unit=DEFAULT_UNIT,
        bonus_schedule_length=None,
        bonus_schedule_exp_ratio=DEFAULT_EXP_RATIO,
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
        self.schedule.check_applies_to(self.spec)
        self.fuse_projection = bool(el_fuse_projection)
        self.impl = str(el_impl)
        # Unknown, not runnable here, or failing its self-check on the run's
        # device: a forced choice fails now, auto settles on what works.
        device = torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")
        runs = resolve_impl(self.impl, device)
        logger.info("encouraging_ce: loss implementation %s (--el-impl %s) on %s%s", runs, self.impl, device,
                    ", self-check against a float64 computation passed" if runs == "triton" else "")
        # where training left the schedule: fairseq-validate and other tools
        # that rebuild the criterion from a checkpoint find it in the task
        self.epoch, self.num_updates = saved_progress(task) or (1, 0)
        self._current = self.spec
        self.set_progress()
        if not follow_training_progress(task, self) and self.schedule.kind != "constant":
            raise ELConfigError(
                f"--bonus-schedule {self.schedule.kind} needs the training progress, but the task "
                f"{type(task).__name__} has no fairseq trainer hooks ({', '.join(HOOKS)}); "
                "use a fairseq task such as --task translation_encouraging, or --bonus-schedule constant")

    # -- progress (reported by the task's trainer hooks: wce_fairseq/progress.py) --
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

    def check_model(self, model) -> None:
        """Refuse, before the first batch, a model --el-fuse-projection cannot serve."""
        if self.fuse_projection:
            output_projection(model)

    # -- loss ----------------------------------------------------------------------
    def _drop_prefix(self, x, target):
        if self.ignore_prefix_size > 0:
            x = x[:, self.ignore_prefix_size :, :].contiguous()
            target = target[:, self.ignore_prefix_size :].contiguous()
        return x, target

    def compute_el(self, model, net_output, sample, reduce=True, overwrite_logits=False):
        """The loss parts and diagnostics from the model's output. The scores
        are the raw logits where the model's distribution is their plain
        log-softmax, else the model's own log-probabilities (called as the stock
        criterion calls them, without the target: an adaptive softmax then
        normalises every row). With ``overwrite_logits`` (our ``forward`` only)
        the gradient is written over the raw logits instead of a new N x V
        buffer: nothing reads them after the loss."""
        raw = plain_log_softmax(model)
        scores = net_output[0] if raw else model.get_normalized_probs(net_output, log_probs=True)
        scores, target = self._drop_prefix(scores, model.get_targets(sample, net_output))
        options = {}
        if overwrite_logits and raw and scores.requires_grad and self.impl != "reference":
            options["inplace_backward"] = True
        res = encouraging_loss_parts(
            scores.reshape(-1, scores.size(-1)), target.reshape(-1), self._current, ignore_index=self.padding_idx,
            reduction="sum" if reduce else "none", impl=self.impl, want_stats=True, **options,
        )
        if not reduce:  # per token, shaped (N, 1) as the stock criterion returns them
            res = res._replace(loss=res.loss.unsqueeze(-1), nll_loss=res.nll_loss.unsqueeze(-1),
                               bonus_loss=res.bonus_loss.unsqueeze(-1))
        return res

    def compute_loss(self, model, net_output, sample, reduce=True):
        res = self.compute_el(model, net_output, sample, reduce)
        return res.loss, res.nll_loss

    def _fused(self, model, sample):
        proj = output_projection(model)
        features = model(**sample["net_input"], features_only=True)
        h, target = self._drop_prefix(features[0], model.get_targets(sample, features))
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
        d = res.stats
        logging_output = {
            "loss": res.loss.data,
            "nll_loss": res.nll_loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
            # Sums (tensors, read only when fairseq reduces the logs), so that
            # fairseq may add them up across workers.
            "el_bonus": res.bonus_loss.data.sum(),
            "el_ntok": d.n_tokens,
            "el_rho": self._current.bonus_weight * d.n_tokens,
            "el_sum_p": d.sum_target_prob,
            "el_n_well": d.n_well_classified,
            "el_sum_margin": d.sum_margin,
        }
        if self.report_accuracy:
            logging_output["n_correct"] = utils.item(d.n_correct)
            logging_output["total"] = utils.item(d.n_tokens)
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
