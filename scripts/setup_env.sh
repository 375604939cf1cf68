#!/usr/bin/env bash
# Creates .venv (if missing) with pinned torch, the fairseq fork and our
# dependencies, and installs this package in editable mode. Idempotent.
#   scripts/setup_env.sh          runtime only
#   scripts/setup_env.sh --hf     plus the Hugging Face stack (requirements-hf.txt: examples/hf_seq2seq, llm_sft)
#   scripts/setup_env.sh --test   plus pytest, hypothesis, triton and the Hugging Face stack (the whole suite)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] >= (3, 9), sys.version' \
  || { echo "setup_env: need Python >= 3.9 (3.11 recommended)" >&2; exit 1; }
stamp=.venv/.wce_installed
want=$(cat requirements.txt requirements-test.txt requirements-hf.txt setup.py scripts/setup_env.sh | sha1sum | cut -c1-12)
extra=${1:-}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip -q --disable-pip-version-check)
pip_quiet_about_torchaudio() {
  # pip's output without its dependency-conflict report on ve-fairseq's torchaudio; pip's exit status
  local log rc=0
  log=$(mktemp)
  "${PIP[@]}" "$@" >"$log" 2>&1 || rc=$?
  grep -v -e "^ve-fairseq .* requires torchaudio" -e "^ERROR: pip's dependency resolver does not currently take" \
    "$log" || true
  rm -f "$log"
  return $rc
}
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing torch==2.13.0 (CPU), ve-fairseq==0.12.3 (no torchaudio), requirements.txt"
  "${PIP[@]}" install torch==2.13.0
  # The fork declares torchaudio, which would pull a different torch build:
  # install it without dependencies and list its real ones in requirements.txt.
  "${PIP[@]}" install --no-deps ve-fairseq==0.12.3
  # pip then reports the torchaudio the fork declares as missing: it is left
  # out on purpose, so that report is replaced by this line
  echo "[setup] ve-fairseq's torchaudio requirement is left out on purpose (fairseq's text tasks do not use it)"
  pip_quiet_about_torchaudio install -r requirements.txt
  "${PIP[@]}" install --no-deps --no-build-isolation -e .
  rm -f .venv/.wce_test .venv/.wce_hf
  echo "$want" > "$stamp"
fi
if { [ "$extra" = "--hf" ] || [ "$extra" = "--test" ]; } && [ ! -f .venv/.wce_hf ]; then
  echo "[setup] installing the Hugging Face stack (requirements-hf.txt)"
  pip_quiet_about_torchaudio install -r requirements-hf.txt
  touch .venv/.wce_hf
fi
if [ "$extra" = "--test" ] && [ ! -f .venv/.wce_test ]; then
  echo "[setup] installing test requirements (pytest, hypothesis, triton)"
  pip_quiet_about_torchaudio install -r requirements-test.txt
  touch .venv/.wce_test
fi
.venv/bin/python -c "import torch, fairseq, wce_fairseq; print('[setup] torch', torch.__version__, '| fairseq', fairseq.__version__, '| wce_fairseq', wce_fairseq.__version__)"
# nothing above may have replaced the pinned torch (a loose requirement would pull a CUDA build)
.venv/bin/python -c "import torch, sys; sys.exit(None if torch.__version__.startswith('2.13.0') else 'setup_env: torch was replaced: ' + torch.__version__)"
