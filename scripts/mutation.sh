#!/usr/bin/env bash
# Mutation testing of the loss core (not part of CI; hours on two cores):
#   1. mutmut 3 over the modules setup.cfg's [mutmut] section names, each
#      mutant run against the fast tests that reach it;
#   2. hand-written one-line mutations of the Triton kernels
#      (scripts/mutation/triton_mutants.py), which mutmut cannot reach.
# Prints the score (survivors listed in scripts/mutation/equivalent.txt are
# left out of it, with the reason there; those in killed_outside.txt are named
# with the test that kills them) and every other survivor.
#   scripts/mutation.sh [python|triton|all]      default: all
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
bash scripts/setup_env.sh --test
.venv/bin/python -c "import mutmut" 2>/dev/null || .venv/bin/python -m pip -q install mutmut==3.8.1
children=$(nproc)  # before OMP_NUM_THREADS=1, which nproc would report
export OMP_NUM_THREADS=1 TRITON_INTERPRET=1
status=0
if [ "$what" = python ] || [ "$what" = all ]; then
  # always a fresh mutants/: over an existing one, mutmut 3.8.1 measures coverage
  # through the mutated copies, gets part of it and numbers the mutants anew
  rm -rf mutants
  .venv/bin/mutmut run --max-children "$children"
  .venv/bin/mutmut results --all true | .venv/bin/python scripts/mutation/summary.py || status=1
fi
if [ "$what" = triton ] || [ "$what" = all ]; then
  .venv/bin/python scripts/mutation/triton_mutants.py || status=1
fi
exit $status
