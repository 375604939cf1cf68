#!/usr/bin/env bash
# Decode the test set from the average of the last 10 checkpoints and from
# checkpoint_best (beam 5); tokenised BLEU (the paper's metric), sacreBLEU
# with its signature, chrF2. See examples/common/evaluate.sh.
#   evaluate.sh DATA_BIN SAVE_DIR [REF_FILE] [--last N] [--subset S] [--checkpoints "avg best"] [generate args]
exec bash "$(dirname "$0")/../common/evaluate.sh" "$@"
