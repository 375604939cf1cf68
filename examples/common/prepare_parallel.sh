# Shared body of the prepare.sh recipes (sourced after lib.sh). The caller sets
#   SRC TGT VOCAB OUT, URLS (array), CHECKSUMS, and a function extract_raw ARCHIVE_DIR RAW_DIR
# that writes RAW_DIR/{train,valid,test}.{SRC,TGT} from the downloaded archives.
usage() {
  cat >&2 <<USAGE
usage: $(basename "$0") [--raw DIR | --archives DIR] [--out DIR] [--vocab N] [--lowercase]
  (default)       download the archives (checksums in $(basename "$CHECKSUMS")), extract, clean,
                  SentencePiece ($VOCAB, joint), fairseq-preprocess -> OUT/bin
  --raw DIR       offline: DIR/{train,valid,test}.{$SRC,$TGT} are already plain text
  --archives DIR  offline: the downloaded archives are in DIR (same names as the URLs)
  --out DIR       output folder (default: $OUT)
USAGE
  exit 2
}
# LOWER comes from the recipe (prepare.sh sets it; only De->En lowercases) or
# --lowercase, never from the environment
RAW_IN="" ARCH_IN="" LOWER=${RECIPE_LOWER:-0}
while [ $# -gt 0 ]; do
  case $1 in
    --raw) RAW_IN=$2; shift 2 ;;
    --archives) ARCH_IN=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --vocab) VOCAB=$2; shift 2 ;;
    --lowercase) LOWER=1; shift ;;
    -h|--help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
need python fairseq-preprocess
mkdir -p "$OUT"
RAW="$OUT/raw"
if [ -n "$RAW_IN" ]; then
  [ -d "$RAW_IN" ] || die "--raw: no such folder: $RAW_IN"
  echo "[prepare] using already-extracted text from $RAW_IN"
  mkdir -p "$RAW"
  for s in train valid test; do for l in "$SRC" "$TGT"; do
    need_file "$RAW_IN/$s.$l"; cp "$RAW_IN/$s.$l" "$RAW/$s.$l"
  done; done
else
  # archives are read from --archives DIR (never written to) or downloaded to
  # OUT/orig; either way they are unpacked under OUT/extracted
  ARCH=${ARCH_IN:-"$OUT/orig"}
  EXTRACTED="$OUT/extracted"
  mkdir -p "$ARCH" "$EXTRACTED"
  for url in "${URLS[@]}"; do
    f="$ARCH/$(basename "$url")"
    if [ -n "$ARCH_IN" ]; then need_file "$f"; fi
    fetch "$url" "$f" "$OUT/sha256/$(basename "$f").sha256"  # recorded hashes live under OUT too
    echo "[prepare] extracting $(basename "$f") into $EXTRACTED"
    tar -xzf "$f" -C "$EXTRACTED"
  done
  mkdir -p "$RAW"
  extract_raw "$EXTRACTED" "$RAW"
fi
if [ "$LOWER" = 1 ]; then
  for s in train valid test; do for l in "$SRC" "$TGT"; do
    python -c "import sys; [sys.stdout.write(x.lower()) for x in sys.stdin]" < "$RAW/$s.$l" > "$RAW/$s.$l.lc"
    mv "$RAW/$s.$l.lc" "$RAW/$s.$l"
  done; done
fi
for s in train valid test; do echo "[prepare] $s: $(wc -l < "$RAW/$s.$SRC") lines"; done
binarize_raw "$SRC" "$TGT" "$RAW" "$OUT" "$VOCAB"
echo "[prepare] ready: $OUT/bin  (references for evaluate.sh: $RAW/test.$TGT)"
