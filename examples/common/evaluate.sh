#!/usr/bin/env bash
# Evaluate a run: average the last N checkpoints, decode the test set with beam
# 5, and score it three ways:
#   * sacreBLEU on detokenised text, with its signature (the number to compare);
#   * fairseq-generate's own BLEU4 over whitespace tokens (the style the paper's
#     fairseq-based numbers use; on lowercased IWSLT'14 data);
#   * chrF.
#   evaluate.sh DATA_BIN SAVE_DIR [REF_FILE] [--last N] [--subset test] [extra fairseq-generate args]
# REF_FILE defaults to the decoded references (SentencePiece is lossless).
source "$(dirname "$0")/lib.sh"
if [ $# -lt 2 ]; then echo "usage: $(basename "$0") DATA_BIN SAVE_DIR [REF_FILE] [--last N] [--subset S] [args]" >&2; exit 2; fi
DATA=$1 SAVE=$2; shift 2
REF=""
if [ $# -gt 0 ] && [ "${1:0:2}" != "--" ]; then REF=$1; shift; fi
LAST=10 SUBSET=test
while [ $# -gt 0 ]; do
  case $1 in
    --last) LAST=$2; shift 2 ;;
    --subset) SUBSET=$2; shift 2 ;;
    *) break ;;
  esac
done
need fairseq-generate sacrebleu
[ -d "$SAVE" ] || die "no such run folder: $SAVE"
DEV=()
python -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" || DEV=(--cpu)
CKPT="$SAVE/checkpoint_avg$LAST.pt"
if compgen -G "$SAVE/checkpoint[0-9]*.pt" >/dev/null || compgen -G "$SAVE/checkpoint_[0-9]*_[0-9]*.pt" >/dev/null; then
  # the last LAST update checkpoints where the run saved by updates, else the last LAST epochs
  python -m wce_fairseq.tools.average --dir "$SAVE" --last "$LAST" --by auto --out "$CKPT" >/dev/null
else
  echo "[evaluate] no epoch or update checkpoints to average; using checkpoint_last.pt"
  CKPT="$SAVE/checkpoint_last.pt"
fi
OUT="$SAVE/eval.$SUBSET"
mkdir -p "$OUT"
echo "[evaluate] decoding $SUBSET with $(basename "$CKPT"), beam 5"
fairseq-generate "$DATA" --user-dir "$PLUGIN" --task translation_encouraging --path "$CKPT" \
  --gen-subset "$SUBSET" --beam 5 --batch-size 128 --remove-bpe sentencepiece "${DEV[@]}" "$@" \
  > "$OUT/generate.txt" 2> "$OUT/generate.log" || { tail -20 "$OUT/generate.log" >&2; die "fairseq-generate failed"; }
python - "$OUT" <<'PY'
import sys, os
out = sys.argv[1]
hyp, ref = {}, {}
for line in open(os.path.join(out, "generate.txt"), encoding="utf-8"):
    for tag, d in (("D-", hyp), ("T-", ref)):
        if line.startswith(tag):
            i, *rest = line.rstrip("\n").split("\t")
            d[int(i[2:])] = rest[-1]
for name, d in (("hyp", hyp), ("ref.decoded", ref)):
    with open(os.path.join(out, name), "w", encoding="utf-8") as f:
        f.writelines(d[i] + "\n" for i in sorted(d))
PY
REF=${REF:-"$OUT/ref.decoded"}
need_file "$REF"
[ "$(wc -l < "$REF")" = "$(wc -l < "$OUT/hyp")" ] || die "$REF has $(wc -l < "$REF") lines, the hypotheses $(wc -l < "$OUT/hyp")"
{
  echo "run: $SAVE ($(basename "$CKPT"), beam 5, $SUBSET)"
  echo -n "sacreBLEU (detok): "; sacrebleu "$REF" -i "$OUT/hyp" -m bleu -b -w 2 ; sacrebleu "$REF" -i "$OUT/hyp" -m bleu --format text | sed -n 's/^/  /p' | head -1
  echo -n "chrF2: "; sacrebleu "$REF" -i "$OUT/hyp" -m chrf -b -w 2
  echo -n "fairseq BLEU4 (whitespace tokens): "
  { grep -h -o "BLEU4 = [0-9.]*" "$OUT/generate.txt" "$OUT/generate.log" || echo "BLEU4 = n/a"; } | tail -1 | cut -d' ' -f3
} | tee "$OUT/scores.txt"
