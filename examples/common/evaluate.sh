#!/usr/bin/env bash
# Evaluate a run as the authors did: decode the test set with beam 5 from the
# average of the last N checkpoints AND from checkpoint_best (chosen during
# training by validation BLEU), and score each with
#   * tokenised BLEU: fairseq-generate's BLEU4 on the recipe's tokenised text
#     (the paper's metric; Moses-tokenised and lowercased for IWSLT'14 De->En),
#     recomputed from the text and printed beside fairseq-generate's own line;
#   * sacreBLEU on detokenised text with its signature (case:lc where the data
#     is lowercased), and chrF2.
#   evaluate.sh DATA_BIN SAVE_DIR [REF_FILE] [--last N] [--subset S] [--checkpoints "avg best"] [generate args]
# How to remove subwords and where the references are comes from
# DATA_BIN/wce_recipe.json, written by prepare.sh; REF_FILE overrides the
# detokenised reference (needed for data prepared some other way).
# Writes SAVE_DIR/eval.S/{avgN,best}/{generate.txt,hyp.tok,hyp.detok,scores.txt,scores.json};
# tools.compare reads those folders.
source "$(dirname "$0")/lib.sh"
if [ $# -lt 2 ]; then echo "usage: $(basename "$0") DATA_BIN SAVE_DIR [REF_FILE] [--last N] [--subset S] [--checkpoints \"avg best\"] [args]" >&2; exit 2; fi
DATA=$1 SAVE=$2; shift 2
REF=()
if [ $# -gt 0 ] && [ "${1:0:2}" != "--" ]; then need_file "$1"; REF=(--ref-detok "$1"); shift; fi
LAST=10 SUBSET=test KINDS="avg best"
while [ $# -gt 0 ]; do
  case $1 in
    --last) LAST=$2; shift 2 ;;
    --subset) SUBSET=$2; shift 2 ;;
    --checkpoints) KINDS=$2; shift 2 ;;
    *) break ;;
  esac
done
[[ $LAST =~ ^[1-9][0-9]*$ ]] || die "--last must be a positive integer, got '$LAST'"
for k in $KINDS; do [[ $k == avg || $k == best ]] || die "--checkpoints takes 'avg', 'best' or both, got '$k'"; done
need fairseq-generate python
[ -d "$SAVE" ] || die "no such run folder: $SAVE"
REMOVE_BPE=$(python -c "
import sys; from wce_fairseq.tools.score import read_meta
m = read_meta(sys.argv[1]); print((m or {}).get('remove_bpe', 'sentencepiece'))" "$DATA")
BPE_ARG=(--remove-bpe sentencepiece)
[ "$REMOVE_BPE" = subword_nmt ] && BPE_ARG=(--remove-bpe)
[ -f "$DATA/wce_recipe.json" ] || [ ${#REF[@]} -gt 0 ] || die "$DATA has no wce_recipe.json (not made by our prepare.sh): pass the detokenised reference file as REF_FILE"
DEV=()
has_gpu || DEV=(--cpu)

CKPTS=() LABELS=()
for k in $KINDS; do
  if [ "$k" = avg ]; then
    if compgen -G "$SAVE/checkpoint[0-9]*.pt" >/dev/null || compgen -G "$SAVE/checkpoint_[0-9]*_[0-9]*.pt" >/dev/null; then
      # the last LAST update checkpoints where the run saved by updates, else the last LAST epochs
      python -m wce_fairseq.tools.average --dir "$SAVE" --last "$LAST" --by auto --out "$SAVE/checkpoint_avg$LAST.pt" >/dev/null
      CKPTS+=("$SAVE/checkpoint_avg$LAST.pt") LABELS+=("avg$LAST")
    else
      echo "[evaluate] no epoch or update checkpoints to average; using checkpoint_last.pt"
      CKPTS+=("$SAVE/checkpoint_last.pt") LABELS+=("last")
    fi
  elif [ -f "$SAVE/checkpoint_best.pt" ]; then
    CKPTS+=("$SAVE/checkpoint_best.pt") LABELS+=("best")
  else
    echo "[evaluate] no checkpoint_best.pt in $SAVE; skipping it"
  fi
done
[ ${#CKPTS[@]} -gt 0 ] || die "nothing to evaluate in $SAVE"
SUMMARY="$SAVE/eval.$SUBSET/scores.txt"
mkdir -p "$SAVE/eval.$SUBSET"
: > "$SUMMARY"
for i in "${!CKPTS[@]}"; do
  OUT="$SAVE/eval.$SUBSET/${LABELS[$i]}"
  mkdir -p "$OUT"
  echo "[evaluate] decoding $SUBSET with $(basename "${CKPTS[$i]}"), beam 5"
  fairseq-generate "$DATA" --user-dir "$PLUGIN" --task translation_encouraging --path "${CKPTS[$i]}" \
    --gen-subset "$SUBSET" --beam 5 --batch-size 128 "${BPE_ARG[@]}" "${DEV[@]}" "$@" \
    > "$OUT/generate.txt" 2> "$OUT/generate.log" || { tail -20 "$OUT/generate.log" >&2; die "fairseq-generate failed"; }
  python -m wce_fairseq.tools.score generate --gen "$OUT/generate.txt" --bin "$DATA" --subset "$SUBSET" \
    --out "$OUT" --label "run: $SAVE ($(basename "${CKPTS[$i]}"), beam 5, $SUBSET)" "${REF[@]}" | tee -a "$SUMMARY"
done
