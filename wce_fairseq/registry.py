"""Idempotent registration with fairseq's registries.

fairseq refuses a second registration of the same name or class name, which
happens when the plugin is imported twice under different module names (for
example ``--user-dir`` pointing at a copy while the installed package is also
imported). A second import then reuses what the first registered; a *foreign*
class already holding the name is still an error.
"""
from __future__ import annotations


def _same(a, b) -> bool:
    return a.__qualname__ == b.__qualname__ and a.__module__.split(".")[-1] == b.__module__.split(".")[-1]


def register_once(kind: str, name: str, dataclass=None):
    if kind == "criterion":
        from fairseq.criterions import CRITERION_REGISTRY as registry
        from fairseq.criterions import register_criterion as register
    elif kind == "task":
        from fairseq.tasks import TASK_REGISTRY as registry
        from fairseq.tasks import register_task as register
    else:
        raise ValueError(kind)

    def deco(cls):
        existing = registry.get(name)
        if existing is None:
            return register(name, dataclass=dataclass)(cls)
        if _same(existing, cls):
            return existing
        raise ValueError(f"fairseq {kind} {name!r} is already registered by {existing.__module__}.{existing.__qualname__}")

    return deco
