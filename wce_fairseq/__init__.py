"""wce_fairseq: the encouraging loss (Zhao et al., AAAI 2022) as a fairseq plugin.

* ``wce_fairseq.functional`` / ``wce_fairseq.modules``: plain PyTorch, no fairseq.
* ``--user-dir wce_fairseq``: fairseq imports this package, which then registers
  the ``encouraging_ce`` criterion and the ``translation_encouraging`` task.

The fairseq parts are registered when fairseq is loaded: at once where it
already is (as whenever fairseq imports a ``--user-dir``), else as soon as
something imports it, so ``import wce_fairseq`` before ``import fairseq`` works
too (``TransformerModel.from_pretrained`` of a checkpoint trained with the
plugin, say), and ``import wce_fairseq.functional`` alone never loads fairseq.
:func:`register` does it explicitly.
"""
import importlib.abc
import sys

__version__ = "0.2.0"


def register():
    """Register the criterion and task with fairseq, and apply the plugin's
    fixes to it (idempotent). Imports fairseq."""
    from . import checkpoint_compat, criterions, fairseq_compat, tasks  # noqa: F401

    checkpoint_compat.allow_fairseq_checkpoints()
    fairseq_compat.apply_all()


class _RegisterWhenFairseqLoads(importlib.abc.MetaPathFinder):
    """An import hook that calls :func:`register` once the ``fairseq`` package
    has finished loading, then takes itself off ``sys.meta_path``."""

    def find_spec(self, name, path=None, target=None):
        if name != "fairseq":
            return None
        sys.meta_path.remove(self)  # once, and the finders below find fairseq itself
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _ThenRegister(spec.loader)
        return spec


class _ThenRegister(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        register()

    def __getattr__(self, name):  # get_resource_reader, is_package, ...: the real loader's
        return getattr(self.loader, name)


if sys.modules.get("fairseq") is not None:
    register()
elif not any(isinstance(f, _RegisterWhenFairseqLoads) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenFairseqLoads())
