#!/usr/bin/env bash
# IWSLT'17 Fr->En with the authors' settings (docs/recipes.md): transformer_iwslt_de_en
# with 2+2 layers and all embeddings shared, Adam (0.9, 0.98), lr 5e-4,
# inverse_sqrt with 4000 warm-up updates, weight decay 1e-3, dropout 0.3,
# max-tokens 4096 with no update-freq, 100k updates, fp16 on a GPU;
# checkpoint_best by validation BLEU (beam 5, SentencePiece removed); EL with
# LE 0.5 and label smoothing 0.1.
#   train.sh DATA_BIN {baseline|el} [SEED] [SAVE_DIR] [extra fairseq-train args]
source "$(dirname "$0")/../common/lib.sh"
SRC=fr TGT=en
RECIPE=(--arch transformer_iwslt_de_en --encoder-layers 2 --decoder-layers 2 --share-all-embeddings
  --optimizer adam --adam-betas "(0.9,0.98)" --clip-norm 0.0 --lr 5e-4 --lr-scheduler inverse_sqrt
  --warmup-updates 4000 --weight-decay 0.001 --dropout 0.3 --max-tokens 4096
  --max-update 100000 --keep-interval-updates 10
  --eval-bleu --eval-bleu-args '{"beam": 5, "max_len_a": 1.2, "max_len_b": 10}'
  --eval-bleu-remove-bpe sentencepiece --best-checkpoint-metric bleu --maximize-best-checkpoint-metric)
EL_ARGS=(--log-end 0.5)
source "$REPO/examples/common/train_common.sh"
