#!/usr/bin/env bash
# IWSLT'14 German->English (TED), prepared as fairseq's
# examples/translation/prepare-iwslt14.sh does it (the data behind the paper's
# De->En numbers and every published IWSLT'14 figure: 160,239 / 7,283 / 6,750
# sentence pairs):
#   train: train.tags without <url>/<talkid>/<keywords> lines (the text of
#          <title>/<description> kept), Moses-tokenised, cleaned (1-175 words,
#          ratio 1.5), lowercased; valid = every 23rd line of that, train = the rest;
#   test:  dev2010 + TEDX.dev2012 + tst2010-2012, ’ -> ', tokenised, lowercased;
#   BPE:   subword-nmt, 10k merges learned on train de+en; separate dictionaries.
# sacremoses stands in for Moses' Perl tokenizer, subword-nmt's PyPI release for
# its git checkout. --pipeline spm is a SentencePiece pipeline
# (same text and splits, no Moses tokenisation, SentencePiece 10k joint).
source "$(dirname "$0")/../common/lib.sh"
SRC=de TGT=en VOCAB=10000 RECIPE_LOWER=1
OUT=${OUT:-"$REPO/data/iwslt14_de_en"}
CHECKSUMS="$(dirname "$0")/checksums.sha256"
URLS=("https://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz")
PIPELINES="moses spm"
RAW_NEED="train test"  # valid is held out of train after cleaning, as fairseq's script
TEST_SETS=(IWSLT14.TED.dev2010 IWSLT14.TEDX.dev2012 IWSLT14.TED.tst2010 IWSLT14.TED.tst2011 IWSLT14.TED.tst2012)

extract_raw() {
  local a="$1/de-en" raw=$2 l t
  for l in de en; do
    python -m wce_fairseq_recipes.extract tags --style iwslt14 "$a/train.tags.de-en.$l" > "$raw/train.$l"
    python -m wce_fairseq_recipes.extract xml --style iwslt14 $(for t in "${TEST_SETS[@]}"; do
      echo "$a/$t.de-en.$l.xml"; done) > "$raw/test.$l"
  done
}

process_raw() {
  local raw=$1 out=$2 l s tmp="$2/tmp"
  mkdir -p "$tmp"
  if [ "$PIPELINE" = spm ]; then
    python -m wce_fairseq_recipes.pair_filter "$raw/train.$SRC" "$raw/train.$TGT" "$tmp/train.clean.$SRC" "$tmp/train.clean.$TGT"
    mkdir -p "$out/text"
    for l in "$SRC" "$TGT"; do
      python -m wce_fairseq_recipes.moses lc < "$tmp/train.clean.$l" > "$tmp/train.lc.$l"
      python -m wce_fairseq_recipes.extract split "$tmp/train.lc.$l" "$out/text/train.$l" "$out/text/valid.$l" --every 23
      python -m wce_fairseq_recipes.moses lc < "$raw/test.$l" > "$out/text/test.$l"
    done
    LOWER=1 bash "$REPO/examples/common/binarize.sh" "$SRC" "$TGT" "$out/text" "$out" "$VOCAB"
    return
  fi
  need subword-nmt
  echo "[prepare] Moses tokenisation (sacremoses), cleaning, lowercasing"
  for l in "$SRC" "$TGT"; do
    python -m wce_fairseq_recipes.moses tok -l "$l" --workers 2 < "$raw/train.$l" > "$tmp/train.tags.tok.$l"
  done
  python -m wce_fairseq_recipes.moses clean "$tmp/train.tags.tok" "$SRC" "$TGT" "$tmp/train.tags.clean" 1 175 --ratio 1.5
  mkdir -p "$out/tok" "$out/bpe"
  for l in "$SRC" "$TGT"; do
    python -m wce_fairseq_recipes.moses lc < "$tmp/train.tags.clean.$l" > "$tmp/train.tags.$l"
    python -m wce_fairseq_recipes.extract split "$tmp/train.tags.$l" "$out/tok/train.$l" "$out/tok/valid.$l" --every 23
    python -m wce_fairseq_recipes.moses tok -l "$l" --lowercase --workers 2 < "$raw/test.$l" > "$out/tok/test.$l"
  done
  echo "[prepare] subword-nmt: $VOCAB merges learned on train.$SRC + train.$TGT"
  cat "$out/tok/train.$SRC" "$out/tok/train.$TGT" > "$tmp/train.joint"
  subword-nmt learn-bpe -s "$VOCAB" < "$tmp/train.joint" > "$out/code"
  for s in train valid test; do for l in "$SRC" "$TGT"; do
    subword-nmt apply-bpe -c "$out/code" < "$out/tok/$s.$l" > "$out/bpe/$s.$l"
  done; done
  for s in train valid test; do echo "[prepare] $s: $(wc -l < "$out/bpe/$s.$SRC") sentence pairs"; done
  preprocess_bin "$SRC" "$TGT" "$out/bpe" "$out" separate
  cp "$out/code" "$out/bin/bpecodes"
  # the paper's BLEU is over the tokenised, lowercased text; sacreBLEU scores
  # the Moses-detokenised output against the untouched references, ignoring case
  python -m wce_fairseq.tools.score meta --bin "$out/bin" --lang "$TGT" --remove-bpe subword_nmt --detok moses \
    --lowercase 1 --pipeline "moses-subword_nmt-$VOCAB" --ref-tok "test=$out/tok/test.$TGT" --ref-detok "test=$raw/test.$TGT"
}
source "$REPO/examples/common/prepare_parallel.sh"
