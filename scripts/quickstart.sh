#!/usr/bin/env bash
# One command: set up .venv (pinned torch CPU wheel, fairseq fork, deps) and run
# the offline quickstart (LS-CE vs EL on a synthetic corpus, sacreBLEU, plots).
#   scripts/quickstart.sh [--epochs N] [--out DIR] [--seed S]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export PATH="$PWD/.venv/bin:$PATH"  # fairseq-* and the recipes' tools, as if the venv were activated
exec .venv/bin/python examples/quickstart/run.py "$@"
