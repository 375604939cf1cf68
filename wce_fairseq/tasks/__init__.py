from . import translation_encouraging  # noqa: F401  (registers --task translation_encouraging)
