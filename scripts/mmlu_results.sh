#!/usr/bin/env bash
# Reproduces docs/results-mmlu.md and the packaged default adapter, on RouteLLM's MMLU log: SmolLM2's own
# outcomes (`self`) on the same prompts, then IntroLM vs baselines for the targets self,
# Mixtral-8x7B-Instruct and GPT-4-1106, every method on the same seeded subsets. Two lanes of one torch
# thread each run side by side on a 2-core machine; each step's log is in $RUNS/*.log.
#   bash scripts/mmlu_results.sh            (~2 h on 2 cores)
#   SHIP=1 bash scripts/mmlu_results.sh     (also copies the trained adapter into the package)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-runs/mmlu}
LIMIT_TRAIN=${LIMIT_TRAIN:-1500}
LIMIT_VAL=${LIMIT_VAL:-300}
EVAL_LIMIT=${EVAL_LIMIT:-1500}
LABELS=${LABELS:-runs/labels/self_mmlu.jsonl}
VENDORED=introroute/data/vendored/self_smollm2_mmlu.jsonl.gz
M=mistralai/Mixtral-8x7B-Instruct-v0.1
G=gpt-4-1106-preview
mkdir -p "$RUNS" "$(dirname "$LABELS")"
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1

# Self labels: SmolLM2 answers RouteLLM's MMLU prompts exactly as logged (greedy, 8 new tokens, letter
# grader), for the very subsets train (--limit-train/--limit-val) and eval (--limit) select.
label() {
  "$BIN/introroute" label --log routellm_mmlu --batch-size 16 --max-new-tokens 8 --out "$LABELS" --no-progress "$@"
}
labels_train() { label --splits validation --limit "$LIMIT_VAL" && label --splits train --limit "$LIMIT_TRAIN"; }
labels_test() { label --splits test test_unseen --limit "$EVAL_LIMIT"; }

LOGS=(--log routellm_mmlu --log "$LABELS")
COMMON=("${LOGS[@]}" --limit-train "$LIMIT_TRAIN" --limit-val "$LIMIT_VAL" --threads 1)
introlm() { "$BIN/introroute" train --overwrite "${COMMON[@]}" --targets self "$M" "$G" --out "$RUNS/introlm" --epochs 5 --lr 5e-4; }
# Ablation (issue 3, baseline 4): [INTRO] embedding + head only, no LoRA; remote targets only, as it
# ran before the self labels existed.
nolora() {
  "$BIN/introroute" train --overwrite --log routellm_mmlu --limit-train "$LIMIT_TRAIN" --limit-val "$LIMIT_VAL" --threads 1 \
    --targets "$M" "$G" --out "$RUNS/introlm_nolora" --epochs 5 --lr 5e-4 --lora-r 0
}
baselines() {
  for kind in prior minilm_lr minilm_ft probe; do
    "$BIN/introroute" baseline fit --kind "$kind" "${COMMON[@]}" --targets self "$M" "$G" --out "$RUNS/$kind"
  done
}

step() { local name=$1; shift; { time "$@"; } >"$RUNS/$name.log" 2>&1; }
lane_labels() {
  step labels_train labels_train || { echo failed >"$RUNS/.labels_ready"; return 1; }
  echo ok >"$RUNS/.labels_ready"
  step labels_test labels_test && step baselines baselines
}
lane_introlm() {
  step nolora nolora
  until [[ -s "$RUNS/.labels_ready" ]]; do sleep 30; done
  [[ "$(cat "$RUNS/.labels_ready")" == ok ]] && step introlm introlm
}
rm -f "$RUNS/.labels_ready"
# the committed labels make the label steps no-ops (they resume, skipping labelled ids)
[[ -e "$LABELS" || ! -e "$VENDORED" ]] || gzip -dc "$VENDORED" >"$LABELS"
lane_labels &
labels_pid=$!
lane_introlm &
introlm_pid=$!
wait "$labels_pid"
wait "$introlm_pid"

EVAL=("$BIN/introroute" eval --overwrite "${LOGS[@]}" --splits test test_unseen --limit "$EVAL_LIMIT" --threads 2)
"${EVAL[@]}" --targets self "$M" "$G" --out results/mmlu \
  --scorer introlm="$RUNS/introlm" --scorer minilm_ft="$RUNS/minilm_ft" --scorer minilm_lr="$RUNS/minilm_lr" \
  --scorer probe="$RUNS/probe" --scorer prior="$RUNS/prior" --scorer random
"${EVAL[@]}" --targets "$M" "$G" --out results/mmlu_nolora --scorer introlm_nolora="$RUNS/introlm_nolora"

gzip -9 -n -c "$LABELS" >"$VENDORED"
if [[ "${SHIP:-0}" == 1 ]]; then
  rm -rf introroute/adapters/smollm2-135m-instruct
  mkdir -p introroute/adapters
  cp -r "$RUNS/introlm" introroute/adapters/smollm2-135m-instruct
fi
