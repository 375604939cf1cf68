#!/usr/bin/env bash
# IWSLT'14 German->English (TED), the paper's De->En setting: lowercased,
# SentencePiece 10k joint; valid = every 23rd line of train (held out, as in
# fairseq's classic preparation); test = dev2010 + tst2010-2012 + TEDX.dev2012.
source "$(dirname "$0")/../common/lib.sh"
SRC=de TGT=en VOCAB=10000 RECIPE_LOWER=1
OUT=${OUT:-"$REPO/data/iwslt14_de_en"}
CHECKSUMS="$(dirname "$0")/checksums.sha256"
URLS=("https://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz")
extract_raw() {
  local a="$1/de-en" raw=$2 l
  for l in de en; do
    python -m wce_fairseq.tools.extract tags "$a/train.tags.de-en.$l" > "$raw/all.$l"
    python -m wce_fairseq.tools.extract split "$raw/all.$l" "$raw/train.$l" "$raw/valid.$l" --every 23
    python -m wce_fairseq.tools.extract xml "$a/IWSLT14.TED.dev2010.de-en.$l.xml" \
      "$a/IWSLT14.TEDX.dev2012.de-en.$l.xml" "$a/IWSLT14.TED.tst2010.de-en.$l.xml" \
      "$a/IWSLT14.TED.tst2011.de-en.$l.xml" "$a/IWSLT14.TED.tst2012.de-en.$l.xml" > "$raw/test.$l"
    rm "$raw/all.$l"
  done
}
source "$REPO/examples/common/prepare_parallel.sh"
