"""``impl="reference"``: the loss of docs/design.md ("The loss") written over full probability
vectors, differentiated by autograd. Readable, exact, and memory-hungry (about
ten vocabulary-sized temporaries per token, like the authors' formula); the
fast paths are checked against it."""
from __future__ import annotations

import torch

from .bonus import BonusSpec
from .common import ELResult, diagnostics, reduce_tokens


def smoothed_target(t: torch.Tensor, V: int, eps: float, dtype) -> torch.Tensor:
    """fairseq's label-smoothed target: 1-ε on the target, ε/(V-1) elsewhere."""
    q = torch.full((t.numel(), V), eps / (V - 1), dtype=dtype, device=t.device)
    q.scatter_(-1, t.unsqueeze(-1), 1.0 - eps)
    return q


def reference_forward(logits, target, spec: BonusSpec, ignore_index: int, reduction: str, want_stats: bool) -> ELResult:
    V = logits.size(-1)
    tgt = target.reshape(-1)
    valid = tgt != ignore_index
    t = torch.where(valid, tgt, torch.zeros_like(tgt)).long()
    vf = valid.to(torch.float64)
    # float64 inside, whatever the input: this is the path others are checked against. An ignored
    # row's logits are replaced before use, so whatever it holds (NaN, inf) adds nothing to the loss
    # and gets a zero gradient.
    z = torch.where(valid.unsqueeze(1), logits.reshape(-1, V).double(), 0.0)

    lp = torch.log_softmax(z, dim=-1)
    p = lp.exp()
    q = smoothed_target(t, V, spec.label_smoothing, z.dtype)
    # a class with q = 0 adds 0, also where its log p is -inf (a -inf logit, no smoothing)
    ce = -torch.where(q > 0, q * lp, 0.0).sum(-1)
    nll = -lp.gather(-1, t.unsqueeze(-1)).squeeze(-1)
    if spec.active:
        qb = smoothed_target(t, V, spec.smoothing_b, z.dtype)
        b, _ = spec.curve(p, -torch.expm1(lp), lp)
        bonus = spec.bonus_weight * torch.where(qb > 0, qb * b, 0.0).sum(-1)
    else:
        bonus = torch.zeros_like(ce)
    loss = (ce + bonus) * vf
    n_valid = valid.sum()
    shape = target.shape

    def red(x):
        return reduce_tokens(x.reshape(shape), n_valid, reduction)

    stats = None
    if want_stats:
        with torch.no_grad():
            z_t = z.gather(-1, t.unsqueeze(-1)).squeeze(-1)
            best_other = z.scatter(-1, t.unsqueeze(-1), float("-inf")).amax(-1)
            stats = diagnostics(valid, (-nll).exp(), z_t - best_other, z_t > best_other)
    out_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return ELResult(red(loss).to(out_dtype), red((nll * vf).detach()).to(out_dtype),
                    red((bonus * vf).detach()).to(out_dtype), stats)
