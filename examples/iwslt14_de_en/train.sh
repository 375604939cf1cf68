#!/usr/bin/env bash
# IWSLT'14 De->En, the paper's recipe (docs/design.md §7): transformer_iwslt_de_en, Adam
# (0.9, 0.98), lr 1e-3, inverse_sqrt with 4000 warm-up updates, weight decay
# 1e-4, dropout 0.4, max-tokens 4096 x update-freq 4, 20k updates; EL with LE 0.5
# and label smoothing 0.1 on both terms. Runs on one GPU (or CPU, slowly).
#   train.sh DATA_BIN {baseline|el} [SEED] [SAVE_DIR] [extra fairseq-train args]
source "$(dirname "$0")/../common/lib.sh"
SRC=de TGT=en
RECIPE=(--arch transformer_iwslt_de_en --share-decoder-input-output-embed
  --optimizer adam --adam-betas "(0.9,0.98)" --clip-norm 0.0 --lr 1e-3 --lr-scheduler inverse_sqrt
  --warmup-updates 4000 --weight-decay 0.0001 --dropout 0.4 --max-tokens 4096 --update-freq 4
  --max-update 20000)
EL_ARGS=(--log-end 0.5)
source "$REPO/examples/common/train_common.sh"
