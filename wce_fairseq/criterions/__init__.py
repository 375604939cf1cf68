from . import encouraging_ce  # noqa: F401  (registers --criterion encouraging_ce)
