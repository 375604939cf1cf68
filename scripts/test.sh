#!/usr/bin/env bash
# One command: set up .venv with the test extras and run the whole test suite.
#   scripts/test.sh [pytest args]       e.g. scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh --test
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export PATH="$PWD/.venv/bin:$PATH"  # fairseq-* and the recipes' tools, as if the venv were activated
exec .venv/bin/python -m pytest -ra --durations=15 "$@"
