#!/usr/bin/env bash
# WMT'14 English->German: Europarl v7 + Common Crawl + News Commentary v9,
# valid = newstest2013, test = newstest2014 (full); SentencePiece 32k joint.
# (The paper reports no WMT result; this recipe is ours.)
source "$(dirname "$0")/../common/lib.sh"
SRC=en TGT=de VOCAB=32000 RECIPE_LOWER=0
OUT=${OUT:-"$REPO/data/wmt14_en_de"}
CHECKSUMS="$(dirname "$0")/checksums.sha256"
URLS=(
  "https://statmt.org/wmt13/training-parallel-europarl-v7.tgz"
  "https://statmt.org/wmt13/training-parallel-commoncrawl.tgz"
  "https://statmt.org/wmt14/training-parallel-nc-v9.tgz"
  "https://statmt.org/wmt14/dev.tgz"
  "https://statmt.org/wmt14/test-full.tgz"
)
extract_raw() {
  local a=$1 raw=$2 l
  for l in en de; do
    cat "$a/training/europarl-v7.de-en.$l" "$a/commoncrawl.de-en.$l" "$a/training/news-commentary-v9.de-en.$l" \
      > "$raw/train.$l"
  done
  python -m wce_fairseq_recipes.extract xml "$a/dev/newstest2013-src.en.sgm" > "$raw/valid.en"
  python -m wce_fairseq_recipes.extract xml "$a/dev/newstest2013-ref.de.sgm" > "$raw/valid.de"
  python -m wce_fairseq_recipes.extract xml "$a/test-full/newstest2014-deen-src.en.sgm" > "$raw/test.en"
  python -m wce_fairseq_recipes.extract xml "$a/test-full/newstest2014-deen-ref.de.sgm" > "$raw/test.de"
}
source "$REPO/examples/common/prepare_parallel.sh"
