#!/usr/bin/env bash
# SentencePiece (joint) + fairseq-preprocess (joined dictionary) for a parallel
# corpus laid out as RAW/{train,valid,test[,test1]}.{SRC,TGT} (clean,
# detokenised text).
#   examples/common/binarize.sh SRC TGT RAW OUT VOCAB_SIZE
# writes OUT/spm.model, OUT/tok/*, OUT/bin (fairseq data, joined dictionary,
# and wce_recipe.json: how evaluate.sh scores it).
# Environment: SPM_TYPE (unigram|bpe, default unigram), SPM_MAXLEN (if set,
# training pairs with a side outside 1..SPM_MAXLEN pieces are dropped, as
# fairseq's spm_encode.py --min-len 1 --max-len N), SPM_SEED, LOWER (1 if the
# text was lowercased: sacreBLEU then scores case-insensitively), REF_DIR (where
# the untouched test references are, default RAW).
source "$(dirname "$0")/lib.sh"
if [ $# -ne 5 ]; then echo "usage: $0 SRC TGT RAW_DIR OUT_DIR VOCAB_SIZE" >&2; exit 2; fi
SRC=$1 TGT=$2 RAW=$3 OUT=$4 VOCAB=$5
need python fairseq-preprocess
for split in train valid test; do for l in "$SRC" "$TGT"; do need_file "$RAW/$split.$l"; done; done
SPLITS=(train valid test)
[ -s "$RAW/test1.$SRC" ] && SPLITS+=(test1)
mkdir -p "$OUT/tok"
echo "[binarize] SentencePiece ${SPM_TYPE:-unigram} ($VOCAB, joint $SRC+$TGT)"
python -m wce_fairseq_recipes.spm train --input "$RAW/train.$SRC,$RAW/train.$TGT" --prefix "$OUT/spm" --vocab-size "$VOCAB" \
  --model-type "${SPM_TYPE:-unigram}" --seed "${SPM_SEED:-1}"
for split in "${SPLITS[@]}"; do
  if [ "$split" = train ] && [ -n "${SPM_MAXLEN:-}" ]; then
    python -m wce_fairseq_recipes.spm encode-pair --model "$OUT/spm.model" --inputs "$RAW/train.$SRC" "$RAW/train.$TGT" \
      --outputs "$OUT/tok/train.$SRC" "$OUT/tok/train.$TGT" --min-len 1 --max-len "$SPM_MAXLEN"
    continue
  fi
  for l in "$SRC" "$TGT"; do
    python -m wce_fairseq_recipes.spm encode --model "$OUT/spm.model" < "$RAW/$split.$l" > "$OUT/tok/$split.$l"
  done
done
preprocess_bin "$SRC" "$TGT" "$OUT/tok" "$OUT" joined
cp "$OUT/spm.model" "$OUT/bin/"
# tokenised BLEU of SentencePiece data is over the whitespace tokens of the
# decoded text (fairseq-generate --remove-bpe sentencepiece), so both
# reference files are the plain text
REFS=()
for split in "${SPLITS[@]:2}"; do
  REFS+=(--ref-tok "$split=${REF_DIR:-$RAW}/$split.$TGT" --ref-detok "$split=${REF_DIR:-$RAW}/$split.$TGT")
done
python -m wce_fairseq.tools.score meta --bin "$OUT/bin" --lang "$TGT" --remove-bpe sentencepiece --detok none \
  --lowercase "${LOWER:-0}" --pipeline "sentencepiece-${SPM_TYPE:-unigram}-$VOCAB" "${REFS[@]}"
