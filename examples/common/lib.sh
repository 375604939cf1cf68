# Shared helpers for the recipes (sourced, not run).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PLUGIN="$REPO/wce_fairseq"
# the environment's own fairseq if one is on PATH (an activated venv), else the .venv setup_env.sh made
if ! command -v fairseq-preprocess >/dev/null && [ -x "$REPO/.venv/bin/python" ]; then export PATH="$REPO/.venv/bin:$PATH"; fi

die() { echo "error: $*" >&2; exit 1; }
has_gpu() { python -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }
# lowercase_in_place DIR: lowercase DIR/*.SRC and DIR/*.TGT (the recipe's languages)
lowercase_in_place() {
  local f
  for f in "$1"/*."$SRC" "$1"/*."$TGT"; do python -m wce_fairseq_recipes.moses lc < "$f" > "$f.lc"; mv "$f.lc" "$f"; done
}
need() { for t in "$@"; do command -v "$t" >/dev/null || die "'$t' not found; run scripts/setup_env.sh (it makes .venv) first"; done; }
need_file() { for f in "$@"; do [ -s "$f" ] || die "missing or empty file: $f"; done; }

# fetch URL DEST [RECORD]: download (curl or wget) unless DEST exists, then
# verify it on every run: against $CHECKSUMS (lines "HASH  filename"; a
# 64-digit HASH is a sha256, a 32-digit one an md5, as some hosts publish only
# those) when the archive is listed there, else against RECORD (default
# DEST.sha256), the sha256 recorded at its first use (with a loud warning that
# nothing published vouches for it).
fetch() {
  local url=$1 dest=$2 name sum want recorded algo record=${3:-$2.sha256}
  name=$(basename "$dest")
  if [ ! -s "$dest" ]; then
    echo "[download] $url"
    if command -v curl >/dev/null; then curl -fL --retry 3 -o "$dest.part" "$url" || die "download failed: $url"
    elif command -v wget >/dev/null; then wget -O "$dest.part" "$url" || die "download failed: $url"
    else die "need curl or wget to download $url (or pass already-downloaded files, see --help)"; fi
    mv "$dest.part" "$dest"
  fi
  want=$(awk -v n="$name" '$1 !~ /^#/ && $2 == n {print $1}' "${CHECKSUMS:-/dev/null}" 2>/dev/null || true)
  if [ -n "$want" ]; then
    case ${#want} in
      64) algo=sha256 ;;
      32) algo=md5 ;;
      *) die "$(basename "$CHECKSUMS"): the hash for $name is neither a sha256 nor an md5: $want" ;;
    esac
    sum=$(${algo}sum "$dest" | cut -d' ' -f1)
    [ "$sum" = "$want" ] || die "checksum mismatch for $name: got $algo $sum, expected $want (from $(basename "$CHECKSUMS"))"
    echo "[download] $name: $algo verified against $(basename "$CHECKSUMS")"
    return
  fi
  sum=$(sha256sum "$dest" | cut -d' ' -f1)
  if [ -s "$record" ]; then
    recorded=$(cut -d' ' -f1 "$record")
    [ "$sum" = "$recorded" ] || die "checksum mismatch for $name: got $sum, but its first use recorded $recorded in $record (the file changed; delete both to download again)"
    echo "[download] $name: sha256 matches the hash recorded at its first download"
  else
    mkdir -p "$(dirname "$record")"
    echo "$sum  $name" > "$record"
    {
      echo "[download] WARNING: no published hash is known for $name, so nothing vouches for this file."
      echo "[download] WARNING: its sha256 $sum is recorded in $record and checked on every later run;"
      echo "[download] WARNING: compare it with a colleague's copy, or add it to $(basename "${CHECKSUMS:-checksums.sha256}")."
    } >&2
  fi
}

# preprocess_bin SRC TGT PREFDIR OUT {joined|separate}: fairseq-preprocess
# PREFDIR/{train,valid,test[,test1]}.{SRC,TGT} into OUT/bin. It writes a new
# folder first: an existing OUT/bin is replaced only once this succeeded.
preprocess_bin() {
  local src=$1 tgt=$2 pref=$3 out=$4 dict=$5 new testpref
  local -a joined=()
  [ "$dict" = joined ] && joined=(--joined-dictionary)
  testpref="$pref/test"
  [ -s "$pref/test1.$src" ] && testpref="$testpref,$pref/test1"
  new="$out/bin.new.$$"
  rm -rf "$new"
  echo "[binarize] fairseq-preprocess ($dict dictionaries) -> $out/bin"
  fairseq-preprocess --source-lang "$src" --target-lang "$tgt" \
    --trainpref "$pref/train" --validpref "$pref/valid" --testpref "$testpref" \
    --destdir "$new" "${joined[@]}" --workers 2 > "$out/preprocess.log" 2>&1 \
    || { tail -20 "$out/preprocess.log" >&2; rm -rf "$new"; die "fairseq-preprocess failed; $out/bin left as it was"; }
  rm -rf "$out/bin"
  mv "$new" "$out/bin"
  echo "[binarize] done: $(ls "$out/bin" | wc -l) files"
}

# binarize_raw SRC TGT RAW OUT VOCAB: clean train, then SentencePiece + fairseq-preprocess
binarize_raw() {
  local src=$1 tgt=$2 raw=$3 out=$4 vocab=$5
  need_file "$raw/train.$src" "$raw/train.$tgt" "$raw/valid.$src" "$raw/valid.$tgt" "$raw/test.$src" "$raw/test.$tgt"
  mkdir -p "$out/clean"
  python -m wce_fairseq_recipes.pair_filter "$raw/train.$src" "$raw/train.$tgt" "$out/clean/train.$src" "$out/clean/train.$tgt"
  for s in valid test test1; do
    [ -e "$raw/$s.$src" ] || continue
    cp "$raw/$s.$src" "$out/clean/$s.$src"; cp "$raw/$s.$tgt" "$out/clean/$s.$tgt"
  done
  LOWER=${LOWER:-0} REF_DIR=$raw bash "$REPO/examples/common/binarize.sh" "$src" "$tgt" "$out/clean" "$out" "$vocab"
}
