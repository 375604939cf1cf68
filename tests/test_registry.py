

def test_double_import_does_not_crash():
    """--user-dir imports the package by path while an installed copy may be
    imported by name: the second registration must reuse the first."""
    import importlib.util
    import os
    import sys

    import wce_fairseq

    wce_fairseq.register()
    pkg_dir = os.path.dirname(wce_fairseq.__file__)
    for name in ("wce_fairseq_copy", "wce_fairseq_copy2"):
        spec = importlib.util.spec_from_file_location(name, os.path.join(pkg_dir, "__init__.py"),
                                                      submodule_search_locations=[pkg_dir])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        mod.register()
    from fairseq.criterions import CRITERION_REGISTRY
    from fairseq.tasks import TASK_REGISTRY

    assert CRITERION_REGISTRY["encouraging_ce"].__module__.startswith("wce_fairseq.")
    assert TASK_REGISTRY["translation_encouraging"].__module__.startswith("wce_fairseq.")
