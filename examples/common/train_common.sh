# Shared body of the train.sh recipes (sourced after lib.sh). The caller sets
# the array RECIPE (fairseq-train arguments of the recipe) and optionally
# EL_ARGS. Usage of the resulting script:
#   train.sh DATA_BIN {baseline|el} [SEED] [SAVE_DIR] [extra fairseq-train args...]
# Extra arguments come last, so they override the recipe's. DRY_RUN=1 prints
# the fairseq-train command instead of running it. FP16=auto (default) adds
# --fp16 when a GPU is visible and the recipe has no precision flag of its
# own; FP16=0 never does, FP16=1 always does.
if [ $# -lt 2 ]; then
  echo "usage: $(basename "$0") DATA_BIN {baseline|el} [SEED=1] [SAVE_DIR] [extra fairseq-train args]" >&2; exit 2
fi
DATA=$1 SYSTEM=$2 SEED=${3:-1}
SAVE=${4:-"checkpoints/$(basename "$(dirname "$0")")/$SYSTEM.seed$SEED"}
shift $(( $# < 4 ? $# : 4 ))
need fairseq-train
[ -f "$DATA/dict.$SRC.txt" ] || die "$DATA does not look like fairseq data (no dict.$SRC.txt); run prepare.sh first"
case $SYSTEM in
  # baseline: LS-CE via our criterion at bonus weight 0 (equal to fairseq's
  # label_smoothed_cross_entropy, and it logs the diagnostics); BASELINE=stock
  # uses fairseq's own criterion instead.
  baseline) if [ "${BASELINE:-}" = stock ]; then CRIT=(--criterion label_smoothed_cross_entropy --label-smoothing 0.1)
            else CRIT=(--criterion encouraging_ce --label-smoothing 0.1 --bonus-weight 0); fi ;;
  el) if [ -z "${EL_ARGS+set}" ]; then EL_ARGS=(--log-end 0.5); fi  # the recipe's, else the paper's LE
      CRIT=(--criterion encouraging_ce --label-smoothing 0.1 "${EL_ARGS[@]}") ;;
  *) die "system must be 'baseline' or 'el', got '$SYSTEM'" ;;
esac
PREC=()
if [[ " ${RECIPE[*]} $* " != *" --fp16 "* && " ${RECIPE[*]} $* " != *" --bf16 "* && " ${RECIPE[*]} $* " != *" --cpu "* ]]; then
  case ${FP16:-auto} in
    1) PREC=(--fp16) ;;
    0) ;;
    auto) if has_gpu; then PREC=(--fp16); fi ;;
    *) die "FP16 must be auto, 0 or 1, got '$FP16'" ;;
  esac
fi
CMD=(fairseq-train "$DATA" --user-dir "$PLUGIN" --task translation_encouraging -s "$SRC" -t "$TGT"
  "${RECIPE[@]}" "${PREC[@]}" "${CRIT[@]}" --seed "$SEED" --save-dir "$SAVE"
  --keep-last-epochs 10 --log-format json --log-interval 100 --log-file "$SAVE/train.log"
  --tensorboard-logdir "$SAVE/tb" "$@")
if [ "${DRY_RUN:-0}" = 1 ]; then  # print the command, one argument a line, and stop
  printf '%s\n' "${CMD[@]}"
  exit 0
fi
mkdir -p "$SAVE"
echo "[train] $SYSTEM seed $SEED -> $SAVE"
set -x
"${CMD[@]}"
