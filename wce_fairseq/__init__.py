"""wce_fairseq: the encouraging loss (Zhao et al., AAAI 2022) as a fairseq plugin.

* ``wce_fairseq.functional`` / ``wce_fairseq.modules``: plain PyTorch, no fairseq.
* ``--user-dir wce_fairseq``: fairseq imports this package, which then registers
  the ``encouraging_ce`` criterion and the ``translation_encouraging`` task.

The fairseq parts are registered only when fairseq is already loaded (it is,
whenever fairseq imports a ``--user-dir``), so ``import wce_fairseq.functional``
stays free of fairseq. Call :func:`register` to register them explicitly.
"""
import sys

__version__ = "0.1.0"


def register():
    """Register the criterion and task with fairseq (idempotent)."""
    from . import checkpoint_compat, criterions, fairseq_compat, tasks  # noqa: F401

    checkpoint_compat.allow_fairseq_checkpoints()
    fairseq_compat.apply_all()


if sys.modules.get("fairseq") is not None:
    register()
