#!/usr/bin/env bash
# Reproduces README "Results so far": IntroLM vs baselines on RouteLLM's MMLU log (targets Mixtral-8x7B
# and GPT-4-1106), same seeded subsets for every method. Two lanes of one torch thread each run side
# by side on a 2-core machine; each lane's log is in $RUNS/*.log.
#   bash scripts/mmlu_results.sh            (sizes below; ~1 h on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-runs/mmlu}
LIMIT_TRAIN=${LIMIT_TRAIN:-2000}
LIMIT_VAL=${LIMIT_VAL:-300}
EVAL_LIMIT=${EVAL_LIMIT:-2000}
M=mistralai/Mixtral-8x7B-Instruct-v0.1
G=gpt-4-1106-preview
COMMON=(--log routellm_mmlu --targets "$M" "$G" --limit-train "$LIMIT_TRAIN" --limit-val "$LIMIT_VAL" --threads 1)
mkdir -p "$RUNS"
export HF_HUB_OFFLINE=1

lane_introlm() {
  "$BIN/introroute" train "${COMMON[@]}" --out "$RUNS/introlm" --epochs 5 --lr 5e-4
}
lane_baselines() {
  for kind in prior minilm_lr minilm_ft probe; do
    "$BIN/introroute" baseline fit --kind "$kind" "${COMMON[@]}" --out "$RUNS/$kind"
  done
}
( time lane_introlm ) >"$RUNS/introlm.log" 2>&1 &
( time lane_baselines ) >"$RUNS/baselines.log" 2>&1 &
wait
"$BIN/introroute" eval --log routellm_mmlu --targets "$M" "$G" --splits test test_unseen --limit "$EVAL_LIMIT" \
  --scorer introlm="$RUNS/introlm" --scorer minilm_ft="$RUNS/minilm_ft" --scorer minilm_lr="$RUNS/minilm_lr" \
  --scorer probe="$RUNS/probe" --scorer prior="$RUNS/prior" --scorer random --threads 2 --out results/mmlu
