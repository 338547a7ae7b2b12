#!/usr/bin/env bash
# Issue 9, item 6: do the remote heads (Mixtral-8x7B, GPT-4-1106) gain from all 7,579 MMLU train records
# instead of the seeded 1,500? The same recipe as the shipped adapter (scripts/eq_common.sh; paper
# placement r=32), remote targets only, the same 300 validation records; the prompt caches (~30 GiB in
# bf16) are kept on disk (--prompt-cache disk). Evaluated on the same 1,500 test records as
# docs/results-mmlu.md, joined with that report's scorers, then routing replayed as scripts/routing_results.sh does.
#   bash scripts/mmlu_remote_all.sh     (~1.8 h on one thread; $RUNS/mmlu_all.log)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/eq_common.sh
LOGS=(--log routellm_mmlu self_smollm2_mmlu)
OUT=results/mmlu_all
if [[ ! -s "$RUNS/mmlu_all/training_history.json" ]]; then
  { time "$BIN/introroute" train --overwrite --log routellm_mmlu --limit-val 300 --targets "$M" "$G" --out "$RUNS/mmlu_all" \
    "${RECIPE[@]}" --lora-r 32 --lora-alpha 64 --prompt-cache disk --cache-dir "$RUNS/caches" \
    --threads 1; } >"$RUNS/mmlu_all.log" 2>&1
fi
if [[ ! -s "$RUNS/ev_mmlu_all/predictions.jsonl" ]]; then
  { time "$BIN/introroute" eval --overwrite "${LOGS[@]}" --splits test test_unseen --limit 1500 --targets "$M" "$G" --threads 1 \
    --out "$RUNS/ev_mmlu_all" --scorer introlm_all="$RUNS/mmlu_all"; } >"$RUNS/ev_mmlu_all.log" 2>&1
fi
P=results/mmlu/predictions.jsonl
"$BIN/introroute" eval --overwrite "${LOGS[@]}" --splits test test_unseen --limit 1500 --targets "$M" "$G" --out "$OUT" \
  --scorer introlm_all="$RUNS/ev_mmlu_all/predictions.jsonl" --scorer introlm="$P" --scorer minilm_ft="$P" \
  --scorer probe="$P" --scorer prior="$P" --scorer random
cp "$RUNS/mmlu_all/training_history.json" "$OUT/training_history.json"
"$BIN/introroute" eval --overwrite --routing --predictions "$OUT/predictions.jsonl" "${LOGS[@]}" \
  --router policies/routellm_mmlu_2tier.yaml --out "$OUT/routing"
"$BIN/introroute" paired-auc "$OUT/predictions.jsonl:introlm_all" "$OUT/predictions.jsonl:introlm" \
  --out "$OUT/paired_all_vs_1500.json"
