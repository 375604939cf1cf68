# Shared body of the prepare.sh recipes (sourced after lib.sh). The caller sets
#   SRC TGT VOCAB OUT CHECKSUMS, URLS (array of "URL" or "URL|LOCAL_NAME"),
#   a function extract_raw ARCHIVE_DIR RAW_DIR that writes the plain text of
#   the splits in RAW_NEED (default "train valid test"; test1 optional) from
#   the unpacked archives, and optionally
#   PIPELINES ("a b ...", the first is the default) and a function
#   process_raw RAW_DIR OUT_DIR (default: lowercase if asked, clean train,
#   SentencePiece, fairseq-preprocess).
RAW_NEED=${RAW_NEED:-"train valid test"}
PIPELINES=${PIPELINES:-}
PIPELINE=${PIPELINES%% *}
usage() {
  cat >&2 <<USAGE
usage: $(basename "$0") [--raw DIR | --archives DIR] [--out DIR] [--vocab N] [--lowercase]${PIPELINES:+ [--pipeline ${PIPELINES// /|}]}
  (default)       download the archives (hashes in $(basename "$CHECKSUMS")), extract, preprocess -> OUT/bin
  --raw DIR       offline: DIR/{${RAW_NEED// /,}}.{$SRC,$TGT} (and test1.* if present) are already plain text
  --archives DIR  offline: the downloaded archives are in DIR (names: $(for u in "${URLS[@]}"; do
                    if [[ $u == *"|"* ]]; then echo -n "${u#*|} "; else echo -n "$(basename "$u") "; fi; done))
  --out DIR       output folder (default: $OUT)
  --vocab N       subword vocabulary / BPE merges (default: $VOCAB)${PIPELINES:+
  --pipeline P    one of: $PIPELINES (default: $PIPELINE)}
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
    --pipeline) [ -n "$PIPELINES" ] || { echo "this recipe has one pipeline; --pipeline is not an option" >&2; usage; }
                [[ " $PIPELINES " == *" $2 "* ]] || die "--pipeline must be one of: $PIPELINES (got '$2')"
                PIPELINE=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
[[ $VOCAB =~ ^[1-9][0-9]*$ ]] || die "--vocab must be a positive integer, got '$VOCAB'"
need python fairseq-preprocess
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RAW="$OUT/raw"
if [ -n "$RAW_IN" ]; then
  [ -d "$RAW_IN" ] || die "--raw: no such folder: $RAW_IN"
  echo "[prepare] using already-extracted text from $RAW_IN"
  mkdir -p "$RAW"
  for s in $RAW_NEED; do for l in "$SRC" "$TGT"; do
    need_file "$RAW_IN/$s.$l"; cp "$RAW_IN/$s.$l" "$RAW/$s.$l"
  done; done
  for s in train valid test; do
    if [[ " $RAW_NEED " != *" $s "* && -e "$RAW_IN/$s.$SRC" ]]; then
      echo "[prepare] note: $RAW_IN/$s.* is not used: this recipe makes its $s split itself"
    fi
  done
  if [ -s "$RAW_IN/test1.$SRC" ]; then for l in "$SRC" "$TGT"; do need_file "$RAW_IN/test1.$l"; cp "$RAW_IN/test1.$l" "$RAW/"; done; fi
else
  # archives are read from --archives DIR (never written to) or downloaded to
  # OUT/orig; either way they are unpacked under OUT/extracted
  ARCH=${ARCH_IN:-"$OUT/orig"}
  EXTRACTED="$OUT/extracted"
  mkdir -p "$ARCH" "$EXTRACTED"
  for entry in "${URLS[@]}"; do
    url=${entry%%|*} name=$(basename "${entry%%|*}")
    [[ $entry == *"|"* ]] && name=${entry#*|}
    f="$ARCH/$name"
    if [ -n "$ARCH_IN" ]; then need_file "$f"; fi
    fetch "$url" "$f" "$OUT/sha256/$name.sha256"  # recorded hashes live under OUT too
    echo "[prepare] extracting $name into $EXTRACTED"
    tar -xzf "$f" -C "$EXTRACTED"
  done
  mkdir -p "$RAW"
  extract_raw "$EXTRACTED" "$RAW"
fi
for s in $RAW_NEED test1; do
  if [ -s "$RAW/$s.$SRC" ]; then echo "[prepare] $s: $(wc -l < "$RAW/$s.$SRC") lines"; fi
done
if ! declare -F process_raw >/dev/null; then
  process_raw() {  # $1 RAW $2 OUT
    if [ "$LOWER" = 1 ]; then lowercase_in_place "$1"; fi
    binarize_raw "$SRC" "$TGT" "$1" "$2" "$VOCAB"
  }
fi
process_raw "$RAW" "$OUT"
echo "[prepare] ready: $OUT/bin${PIPELINES:+ (pipeline $PIPELINE)}; evaluate.sh scores it as $OUT/bin/wce_recipe.json says"
