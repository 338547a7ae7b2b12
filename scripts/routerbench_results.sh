#!/usr/bin/env bash
# Reproduces docs/results-routerbench.md: external-classifier scorers (MiniLM fine-tuned, MiniLM +
# logistic regression, per-dataset prior, random) for three RouterBench tiers, trained on its train
# split, then routing replayed on its 458 test queries with the costs RouterBench logged. The
# packaged IntroLM adapter has no heads for these models (see docs/results-routerbench.md). ~30 min on one core.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-runs/routerbench}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
T=(mistralai/mistral-7b-chat mistralai/mixtral-8x7b-chat gpt-4-1106-preview)
mkdir -p "$RUNS"
for kind in prior minilm_lr minilm_ft; do
  "$BIN/introroute" baseline fit --kind "$kind" --log routerbench --targets "${T[@]}" --threads 1 --out "$RUNS/$kind"
done
"$BIN/introroute" eval --overwrite --log routerbench --splits test --threads 1 --targets "${T[@]}" --out results/routerbench \
  --scorer minilm_ft="$RUNS/minilm_ft" --scorer minilm_lr="$RUNS/minilm_lr" --scorer prior="$RUNS/prior" --scorer random
"$BIN/introroute" eval --overwrite --routing --predictions results/routerbench/predictions.jsonl --log routerbench \
  --router policies/routerbench_3tier.yaml --out results/routing/routerbench_3tier
