# Shared helpers for the recipes (sourced, not run).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PLUGIN="$REPO/wce_fairseq"
if [ -x "$REPO/.venv/bin/python" ]; then export PATH="$REPO/.venv/bin:$PATH"; fi

die() { echo "error: $*" >&2; exit 1; }
need() { for t in "$@"; do command -v "$t" >/dev/null || die "'$t' not found; run scripts/setup_env.sh (it makes .venv) first"; done; }
need_file() { for f in "$@"; do [ -s "$f" ] || die "missing or empty file: $f"; done; }

# fetch URL DEST [RECORD]: download (curl or wget) unless DEST exists, then
# verify its sha256 on every run: against $CHECKSUMS (lines "sha256  filename")
# when the archive is listed there, else against RECORD (default DEST.sha256),
# the hash recorded at its first use (with a loud warning that nothing
# published vouches for it).
fetch() {
  local url=$1 dest=$2 name sum want recorded record=${3:-$2.sha256}
  name=$(basename "$dest")
  if [ ! -s "$dest" ]; then
    echo "[download] $url"
    if command -v curl >/dev/null; then curl -fL --retry 3 -o "$dest.part" "$url" || die "download failed: $url"
    elif command -v wget >/dev/null; then wget -O "$dest.part" "$url" || die "download failed: $url"
    else die "need curl or wget to download $url (or pass already-downloaded files, see --help)"; fi
    mv "$dest.part" "$dest"
  fi
  sum=$(sha256sum "$dest" | cut -d' ' -f1)
  want=$(awk -v n="$name" '$1 !~ /^#/ && $2 == n {print $1}' "${CHECKSUMS:-/dev/null}" 2>/dev/null || true)
  if [ -n "$want" ]; then
    [ "$sum" = "$want" ] || die "checksum mismatch for $name: got $sum, expected $want (from $(basename "$CHECKSUMS"))"
    echo "[download] $name: sha256 verified against $(basename "$CHECKSUMS")"
  elif [ -s "$record" ]; then
    recorded=$(cut -d' ' -f1 "$record")
    [ "$sum" = "$recorded" ] || die "checksum mismatch for $name: got $sum, but its first use recorded $recorded in $record (the file changed; delete both to download again)"
    echo "[download] $name: sha256 matches the hash recorded at its first download"
  else
    mkdir -p "$(dirname "$record")"
    echo "$sum  $name" > "$record"
    {
      echo "[download] WARNING: no published sha256 is known for $name, so nothing vouches for this file."
      echo "[download] WARNING: its sha256 $sum is recorded in $record and checked on every later run;"
      echo "[download] WARNING: compare it with a colleague's copy, or add it to $(basename "${CHECKSUMS:-checksums.sha256}")."
    } >&2
  fi
}

# binarize_raw SRC TGT RAW OUT VOCAB: clean train, then SentencePiece + fairseq-preprocess
binarize_raw() {
  local src=$1 tgt=$2 raw=$3 out=$4 vocab=$5
  need_file "$raw/train.$src" "$raw/train.$tgt" "$raw/valid.$src" "$raw/valid.$tgt" "$raw/test.$src" "$raw/test.$tgt"
  mkdir -p "$out/clean"
  python -m wce_fairseq.tools.clean "$raw/train.$src" "$raw/train.$tgt" "$out/clean/train.$src" "$out/clean/train.$tgt"
  for s in valid test; do cp "$raw/$s.$src" "$out/clean/$s.$src"; cp "$raw/$s.$tgt" "$out/clean/$s.$tgt"; done
  bash "$REPO/examples/common/binarize.sh" "$src" "$tgt" "$out/clean" "$out" "$vocab"
}
