#!/usr/bin/env bash
# WMT'14 En->De (our recipe; the paper has none): Transformer base or big,
# shared embeddings, fp16 on GPUs, ~32k target tokens per update on 1-8 GPUs
# (update-freq = 8 / GPUs for base, 16 / GPUs for big).
#   MODEL=base|big NGPU=N train.sh DATA_BIN {baseline|el} [SEED] [SAVE_DIR] [extra args]
source "$(dirname "$0")/../common/lib.sh"
SRC=en TGT=de
MODEL=${MODEL:-base}
if [ -z "${NGPU:-}" ]; then
  NGPU=$(python -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
fi
DEV=(--fp16 --distributed-world-size "$NGPU")  # NGPU sets both the GPUs used and the update-freq below
if [ "$NGPU" -eq 0 ]; then DEV=(--cpu); NGPU=1; echo "[train] no GPU found: running on the CPU (slow)"; fi
case $MODEL in
  base) RECIPE=(--arch transformer_wmt_en_de --lr 7e-4 --dropout 0.1 --max-tokens 4096
          --update-freq $(( (8 + NGPU - 1) / NGPU )) --max-update 100000) ;;
  big) RECIPE=(--arch transformer_vaswani_wmt_en_de_big --lr 5e-4 --dropout 0.3 --max-tokens 3584
          --update-freq $(( (16 + NGPU - 1) / NGPU )) --max-update 300000) ;;
  *) die "MODEL must be base or big, got '$MODEL'" ;;
esac
RECIPE+=(--share-all-embeddings --optimizer adam --adam-betas "(0.9,0.98)" --clip-norm 0.0
  --lr-scheduler inverse_sqrt --warmup-updates 4000 --weight-decay 0.0 "${DEV[@]}"
  --save-interval-updates "${SAVE_EVERY:-2000}" --keep-interval-updates 10
  --eval-bleu --eval-bleu-args '{"beam": 5, "max_len_a": 1.2, "max_len_b": 10}' --eval-bleu-remove-bpe sentencepiece
  --best-checkpoint-metric bleu --maximize-best-checkpoint-metric)
# evaluate.sh averages the last 10 of these update checkpoints (in fp32), as
# fairseq's scaling_nmt example does; with epochs of ~20k updates, averaging
# the last 10 *epoch* checkpoints would span half of a 100k-update run.
# checkpoint_best is chosen by validation BLEU (at every save), as in the IWSLT
# recipes: EL's validation loss includes the bonus and is not comparable.
EL_ARGS=(--log-end 0.5)
source "$REPO/examples/common/train_common.sh"
