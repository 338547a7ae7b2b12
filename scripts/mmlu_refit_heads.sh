#!/usr/bin/env bash
# Issue 9, item 6, within one CPU session: the shipped adapter's Mixtral/GPT-4 heads refitted on all
# 7,579 MMLU train records with its LoRA, [INTRO] row and `self` head frozen (`introroute train
# --from-adapter <that adapter> --heads-only`), so every `self` number of docs/results-factual-qa.md stays
# as it is. Only a linear layer learns, hence lr 1e-3 (the joint recipe's 3e-4 moves LoRA too). The
# same 300 validation and 1,500 test records as scripts/mmlu_remote_all.sh; compared on them with the
# shipped heads (EntityQuestions + 1,500 MMLU, trained jointly) and the MMLU-only adapter trained
# jointly on all 7,579 (results/mmlu_all). Resumable: a finished step is skipped.
#   bash scripts/mmlu_refit_heads.sh     (~70 min on 2 cores: training 55, evaluation 2 x 9; $RUNS/*.log)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/eq_common.sh
LOGS=(--log routellm_mmlu self_smollm2_mmlu)
OUT=results/mmlu_refit
# The adapter as shipped before this refit (its heads from 1,500 MMLU records): the package's files
# with the head file of the last commit before the refit landed. Training starts from it, and its
# predictions are the "introlm_shipped" column.
PACKAGED=introroute/adapters/smollm2-135m-instruct
SHIPPED=${SHIPPED:-$RUNS/shipped_before_refit}
if [[ ! -s "$SHIPPED/introroute_head.safetensors" ]]; then
  mkdir -p "$SHIPPED" && cp "$PACKAGED"/*.json "$PACKAGED/adapter_model.safetensors" "$SHIPPED/"
  git show 35924bc:"$PACKAGED/introroute_head.safetensors" >"$SHIPPED/introroute_head.safetensors"
fi
if [[ ! -s "$RUNS/refit/training_history.json" ]]; then
  { time "$BIN/introroute" train --overwrite --log routellm_mmlu --limit-val 300 --targets "$M" "$G" --out "$RUNS/refit" \
    --from-adapter "$SHIPPED" --heads-only --epochs 4 --batch-size 16 --lr 1e-3 --schedule cosine --warmup 0.05 \
    --max-grad-norm 1.0 --label-smoothing 0.02 --prompt-cache disk --cache-dir "$RUNS/caches" \
    --threads 2; } >"$RUNS/refit.log" 2>&1
fi
lane() {  # lane NAME ADAPTER: its remote heads' predictions on the 1,500 test records, once
  [[ -s "$RUNS/ev_$1/predictions.jsonl" ]] && return 0
  { time "$BIN/introroute" eval --overwrite "${LOGS[@]}" --splits test test_unseen --limit 1500 --targets "$M" "$G" \
    --threads "${LANE_THREADS:-1}" --out "$RUNS/ev_$1" --scorer "$1=$2"; } >"$RUNS/ev_$1.log" 2>&1
}
lane introlm_refit "$RUNS/refit" &
lane introlm_shipped "$SHIPPED" &
wait
P=results/mmlu_all/predictions.jsonl
"$BIN/introroute" eval --overwrite "${LOGS[@]}" --splits test test_unseen --limit 1500 --targets "$M" "$G" --out "$OUT" \
  --scorer introlm_refit="$RUNS/ev_introlm_refit/predictions.jsonl" \
  --scorer introlm_shipped="$RUNS/ev_introlm_shipped/predictions.jsonl" --scorer introlm_all="$P" \
  --scorer minilm_ft="$P" --scorer probe="$P" --scorer prior="$P" --scorer random
cp "$RUNS/refit/training_history.json" "$OUT/training_history.json"
"$BIN/introroute" eval --overwrite --routing --predictions "$OUT/predictions.jsonl" "${LOGS[@]}" \
  --router policies/routellm_mmlu_2tier.yaml --out "$OUT/routing"
"$BIN/introroute" paired-auc "$OUT/predictions.jsonl:introlm_refit" "$OUT/predictions.jsonl:introlm_shipped" \
  --out "$OUT/paired_refit_vs_shipped.json"
