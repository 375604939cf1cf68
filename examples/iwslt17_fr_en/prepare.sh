#!/usr/bin/env bash
# IWSLT'17 French->English (TED), the authors' Fr->En data: the text steps of
# fairseq's examples/translation/prepare-iwslt17-multilingual.sh for the fr-en
# pair, cased, no Moses tokenisation; SentencePiece BPE 16384 (character
# coverage 1.0) learned on train fr+en; training pairs with a side outside
# 1..250 pieces dropped; joined dictionary (the model shares all embeddings).
# Splits (fairseq's script writes no test set, and the authors do not say which
# they report -- docs/recipes.md): valid = dev2010; test = tst2010-2015
# concatenated; test1 = tst2017, the set sacreBLEU calls "iwslt17".
# Archives: WIT3's releases as mirrored on GitHub (hlt-mt/WIT3, the copies
# sacreBLEU downloads); the md5s in checksums.sha256 are the ones sacreBLEU
# publishes for them.
source "$(dirname "$0")/../common/lib.sh"
SRC=fr TGT=en VOCAB=16384 RECIPE_LOWER=0
OUT=${OUT:-"$REPO/data/iwslt17_fr_en"}
CHECKSUMS="$(dirname "$0")/checksums.sha256"
WIT3=https://raw.githubusercontent.com/hlt-mt/WIT3/master/archive
URLS=("$WIT3/2017-01-trnted/texts/fr/en/fr-en.tgz"
  "$WIT3/2017-01-ted-test/texts/fr/en/fr-en.tgz|fr-en.tst2017.tgz"
  "$WIT3/2017-01-ted-test/texts/en/fr/en-fr.tgz|en-fr.tst2017.tgz")
extract_raw() {
  local a=$1 raw=$2 l y
  for l in fr en; do
    python -m wce_fairseq_recipes.extract tags --style iwslt17 "$a/fr-en/train.tags.fr-en.$l" > "$raw/train.$l"
    python -m wce_fairseq_recipes.extract xml --style iwslt17 "$a/fr-en/IWSLT17.TED.dev2010.fr-en.$l.xml" > "$raw/valid.$l"
    python -m wce_fairseq_recipes.extract xml --style iwslt17 $(for y in 2010 2011 2012 2013 2014 2015; do
      echo "$a/fr-en/IWSLT17.TED.tst$y.fr-en.$l.xml"; done) > "$raw/test.$l"
  done
  # tst2017: French source in the fr-en release, English reference in the en-fr one
  python -m wce_fairseq_recipes.extract xml --style iwslt17 "$a/fr-en/IWSLT17.TED.tst2017.fr-en.fr.xml" > "$raw/test1.fr"
  python -m wce_fairseq_recipes.extract xml --style iwslt17 "$a/en-fr/IWSLT17.TED.tst2017.en-fr.en.xml" > "$raw/test1.en"
  [ "$(wc -l < "$raw/test1.fr")" = "$(wc -l < "$raw/test1.en")" ] || die "tst2017: source and reference differ in length"
}
process_raw() {
  if [ "$LOWER" = 1 ]; then lowercase_in_place "$1"; fi
  SPM_TYPE=bpe SPM_MAXLEN=250 LOWER=$LOWER bash "$REPO/examples/common/binarize.sh" "$SRC" "$TGT" "$1" "$2" "$VOCAB"
}
source "$REPO/examples/common/prepare_parallel.sh"
