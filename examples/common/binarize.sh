#!/usr/bin/env bash
# SentencePiece (joint) + fairseq-preprocess for a parallel corpus laid out as
# RAW/{train,valid,test}.{SRC,TGT} (clean, detokenised text).
#   examples/common/binarize.sh SRC TGT RAW OUT VOCAB_SIZE
# writes OUT/spm.model, OUT/tok/*, OUT/bin (fairseq data, joined dictionary).
set -euo pipefail
if [ $# -ne 5 ]; then echo "usage: $0 SRC TGT RAW_DIR OUT_DIR VOCAB_SIZE" >&2; exit 2; fi
SRC=$1 TGT=$2 RAW=$3 OUT=$4 VOCAB=$5
for tool in python fairseq-preprocess; do
  command -v "$tool" >/dev/null || { echo "binarize: '$tool' not found (activate the .venv made by scripts/setup_env.sh)" >&2; exit 1; }
done
for split in train valid test; do for l in "$SRC" "$TGT"; do
  [ -s "$RAW/$split.$l" ] || { echo "binarize: missing or empty $RAW/$split.$l" >&2; exit 1; }
done; done
mkdir -p "$OUT/tok"
echo "[binarize] SentencePiece ($VOCAB, joint $SRC+$TGT)"
python -m wce_fairseq.tools.spm train --input "$RAW/train.$SRC,$RAW/train.$TGT" --prefix "$OUT/spm" --vocab-size "$VOCAB" \
  --seed "${SPM_SEED:-1}"
for split in train valid test; do for l in "$SRC" "$TGT"; do
  python -m wce_fairseq.tools.spm encode --model "$OUT/spm.model" < "$RAW/$split.$l" > "$OUT/tok/$split.$l"
done; done
echo "[binarize] fairseq-preprocess -> $OUT/bin"
# into a new folder first: an existing bin/ is replaced only once this succeeded
NEW="$OUT/bin.new.$$"
rm -rf "$NEW"
fairseq-preprocess --source-lang "$SRC" --target-lang "$TGT" \
  --trainpref "$OUT/tok/train" --validpref "$OUT/tok/valid" --testpref "$OUT/tok/test" \
  --destdir "$NEW" --joined-dictionary --workers 2 > "$OUT/preprocess.log" 2>&1 \
  || { tail -20 "$OUT/preprocess.log" >&2; rm -rf "$NEW"; echo "binarize: fairseq-preprocess failed; $OUT/bin left as it was" >&2; exit 1; }
cp "$OUT/spm.model" "$NEW/"
rm -rf "$OUT/bin"
mv "$NEW" "$OUT/bin"
echo "[binarize] done: $(ls "$OUT/bin" | wc -l) files"
