#!/usr/bin/env bash
# IWSLT'14 De->En with the authors' settings (translation/readme.sh of their
# code; docs/recipes.md compares them point by point): transformer_iwslt_de_en
# with unshared embeddings, Adam (0.9, 0.98), lr 1e-3, inverse_sqrt with 4000
# warm-up updates, weight decay 1e-4, dropout 0.4, max-tokens 4096 x
# update-freq 4, 20k updates, fp16 on a GPU; checkpoint_best chosen by
# validation BLEU (beam 5, Moses-detokenised, BPE removed); EL with LE 0.5 and
# label smoothing 0.1 on both terms.
#   train.sh DATA_BIN {baseline|el} [SEED] [SAVE_DIR] [extra fairseq-train args]
source "$(dirname "$0")/../common/lib.sh"
SRC=de TGT=en
RECIPE=(--arch transformer_iwslt_de_en
  --optimizer adam --adam-betas "(0.9,0.98)" --clip-norm 0.0 --lr 1e-3 --lr-scheduler inverse_sqrt
  --warmup-updates 4000 --weight-decay 0.0001 --dropout 0.4 --max-tokens 4096 --update-freq 4
  --max-update 20000 --keep-interval-updates 10
  --eval-bleu --eval-bleu-args '{"beam": 5, "max_len_a": 1.2, "max_len_b": 10}' --eval-bleu-detok moses
  --eval-bleu-remove-bpe --best-checkpoint-metric bleu --maximize-best-checkpoint-metric)
EL_ARGS=(--log-end 0.5)
source "$REPO/examples/common/train_common.sh"
