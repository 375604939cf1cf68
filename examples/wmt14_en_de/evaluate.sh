#!/usr/bin/env bash
# Average the last 10 checkpoints, beam 5, sacreBLEU (signature), fairseq BLEU4, chrF.
#   evaluate.sh DATA_BIN SAVE_DIR [REF_FILE] [--last N] [extra fairseq-generate args]
exec bash "$(dirname "$0")/../common/evaluate.sh" "$@"
