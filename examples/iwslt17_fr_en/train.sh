#!/usr/bin/env bash
# IWSLT'17 Fr->En, the paper's recipe (docs/design.md §7): transformer_iwslt_de_en with
# 2+2 layers and shared embeddings, lr 5e-4, dropout 0.3, weight decay 1e-3,
# 100k updates; otherwise as De->En. EL with LE 0.5, label smoothing 0.1.
#   train.sh DATA_BIN {baseline|el} [SEED] [SAVE_DIR] [extra fairseq-train args]
source "$(dirname "$0")/../common/lib.sh"
SRC=fr TGT=en
RECIPE=(--arch transformer_iwslt_de_en --encoder-layers 2 --decoder-layers 2 --share-all-embeddings
  --optimizer adam --adam-betas "(0.9,0.98)" --clip-norm 0.0 --lr 5e-4 --lr-scheduler inverse_sqrt
  --warmup-updates 4000 --weight-decay 0.001 --dropout 0.3 --max-tokens 4096 --update-freq 4
  --max-update 100000)
EL_ARGS=(--log-end 0.5)
source "$REPO/examples/common/train_common.sh"
