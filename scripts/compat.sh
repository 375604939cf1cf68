#!/usr/bin/env bash
# Compatibility check: builds one virtualenv per environment below (PyPI only,
# outside the repository), runs scripts/compat/checks.py in each (import and
# register; toy data; train 2 epochs, resume, fairseq-generate through the CLI
# with --user-dir; a bonus schedule under --task translation; `pip install -e .`
# leaves torch and fairseq alone; the tests that are not slow) and prints a matrix.
#
#   scripts/compat.sh                      fairseq 0.12.2 + torch 1.12.1 (what CI runs)
#   scripts/compat.sh all                  every environment below
#   scripts/compat.sh pinned fs0122-torch2.4 ...
#
# Environments
#   pinned              Python 3.11, ve-fairseq 0.12.3, torch 2.13.0 (.venv, scripts/setup_env.sh)
#   fs0122-torch1.12    Python 3.8, fairseq 0.12.2 (PyPI cp38 wheel), torch 1.12.1
#   fs0122-torch2.4     Python 3.8, fairseq 0.12.2, torch 2.4.1 (what pip picks for 0.12.2 today)
#   main-torch2.4       Python 3.10, fairseq main from a checkout, torch 2.4.1: needs
#                       FAIRSEQ_MAIN_SRC=/path/to/fairseq (main is not on PyPI); skipped without it
#
# Needs: python3.8 / python3.10 (pyenv's $PYENV_ROOT/versions/3.8.*, or on PATH), gcc for
# fairseq main's extensions, network access to PyPI (about 0.8 GB for torch 1.12.1, 3 GB for
# 2.4.1 with its CUDA libraries, which also run on the CPU), ~5 GB of disk per torch 2.x env.
# WCE_COMPAT_DIR (default ~/.cache/wce_fairseq/compat) holds the virtualenvs; they are
# reused while their recipe is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ROOT=${WCE_COMPAT_DIR:-$HOME/.cache/wce_fairseq/compat}
mkdir -p "$ROOT"
ALL=(pinned fs0122-torch1.12 fs0122-torch2.4 main-torch2.4)
envs=("$@")
[ ${#envs[@]} -eq 0 ] && envs=(fs0122-torch1.12)
[ "${envs[0]}" = all ] && envs=("${ALL[@]}")

find_python() {  # find_python 3.8
  local v=$1 c
  for c in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python "$(command -v "python$v" || true)"; do
    [ -x "$c" ] && "$c" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$v'.split('.')))" 2>/dev/null \
      && { echo "$c"; return 0; }
  done
  return 1
}

build() {  # build NAME PYVER TORCH FAIRSEQ(pip spec or "src") REQUIREMENTS
  local name=$1 pyver=$2 torch=$3 fs=$4 req=$5 dir="$ROOT/$1" py
  local want
  want=$(cat "$req" scripts/compat.sh | sha1sum | cut -c1-12)-$torch-$fs
  [ "$fs" = src ] && want="$want-$(cd "$FAIRSEQ_MAIN_SRC" && (git rev-parse HEAD 2>/dev/null || echo nogit))"
  if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$want" ]; then return 0; fi
  py=$(find_python "$pyver") || { echo "compat: Python $pyver not found (pyenv install $pyver)" >&2; return 1; }
  echo "[compat $name] building $dir with $("$py" --version)"
  rm -rf "$dir"
  # (called where `set -e` does not apply: every step checks its own status)
  "$py" -m venv "$dir" || return 1
  local pip=("$dir/bin/python" -m pip -q --disable-pip-version-check)
  "${pip[@]}" install "torch==$torch" || return 1
  # fairseq declares torchaudio, whose wheels pin another torch: install fairseq alone,
  # then its other dependencies
  "${pip[@]}" install -r "$req" || return 1
  if [ "$fs" = src ]; then  # builds its C++/Cython extensions against the torch above
    "${pip[@]}" install --no-deps --no-build-isolation "$FAIRSEQ_MAIN_SRC" || return 1
  else
    "${pip[@]}" install --no-deps "fairseq==$fs" || return 1
  fi
  echo "$want" > "$dir/.stamp"
}

python_of() {
  case $1 in
    pinned) bash scripts/setup_env.sh --test >&2 && echo "$REPO/.venv/bin/python" ;;
    fs0122-torch1.12) build "$1" 3.8 1.12.1 0.12.2 scripts/compat/requirements-fairseq-0.12.2.txt >&2 \
                        && echo "$ROOT/$1/bin/python" ;;
    fs0122-torch2.4) build "$1" 3.8 2.4.1 0.12.2 scripts/compat/requirements-fairseq-0.12.2.txt >&2 \
                       && echo "$ROOT/$1/bin/python" ;;
    main-torch2.4)
      [ -n "${FAIRSEQ_MAIN_SRC:-}" ] || { echo "[compat $1] skipped: set FAIRSEQ_MAIN_SRC to a fairseq main checkout" >&2; return 2; }
      build "$1" 3.10 2.4.1 src scripts/compat/requirements-fairseq-main.txt >&2 && echo "$ROOT/$1/bin/python" ;;
    *) echo "compat: unknown environment $1 (one of: ${ALL[*]}, all)" >&2; return 1 ;;
  esac
}

out=$(mktemp -d)
status=0
for name in "${envs[@]}"; do
  rc=0
  py=$(python_of "$name") || rc=$?
  if [ $rc -eq 2 ]; then continue; fi
  if [ $rc -ne 0 ]; then
    printf '{"name": "%s", "versions": {}, "checks": [{"check": "build virtualenv", "ok": false, "seconds": 0, "detail": "see the log above"}]}\n' \
      "$name" > "$out/$name.json"
    status=1; continue
  fi
  extra=()
  [ "$name" = pinned ] && extra=(--skip-tests)  # scripts/test.sh runs the whole suite there
  # the venv's own tools (fairseq-train, ...) first on PATH, as if it were activated
  PATH="$(dirname "$py"):$PATH" OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} \
    "$py" scripts/compat/checks.py --name "$name" --out "$out/$name.json" "${extra[@]}" || status=1
done
python3 scripts/compat/matrix.py "$out"/*.json
exit $status
