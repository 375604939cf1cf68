#!/usr/bin/env bash
# IWSLT'17 French->English (TED), the paper's Fr->En setting: SentencePiece 16k
# joint (shared embeddings); valid = dev2010, test = tst2010-2015 concatenated.
source "$(dirname "$0")/../common/lib.sh"
SRC=fr TGT=en VOCAB=16000 RECIPE_LOWER=0
OUT=${OUT:-"$REPO/data/iwslt17_fr_en"}
CHECKSUMS="$(dirname "$0")/checksums.sha256"
URLS=("https://wit3.fbk.eu/archive/2017-01-trnted/texts/fr/en/fr-en.tgz")
extract_raw() {
  local a="$1/fr-en" raw=$2 l y
  for l in fr en; do
    python -m wce_fairseq.tools.extract tags "$a/train.tags.fr-en.$l" > "$raw/train.$l"
    python -m wce_fairseq.tools.extract xml "$a/IWSLT17.TED.dev2010.fr-en.$l.xml" > "$raw/valid.$l"
    python -m wce_fairseq.tools.extract xml $(for y in 2010 2011 2012 2013 2014 2015; do
      echo "$a/IWSLT17.TED.tst$y.fr-en.$l.xml"; done) > "$raw/test.$l"
  done
}
source "$REPO/examples/common/prepare_parallel.sh"
