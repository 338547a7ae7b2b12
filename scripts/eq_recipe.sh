#!/usr/bin/env bash
# Issue 9's LoRA placement option side by side with the shipped adapter (paper placement: LoRA r=32/
# alpha=64 on q,o,gate,up,down): the same mix, recipe, seed and 4 epochs with LoRA r=8/alpha=16 on
# q_proj,v_proj (the earlier default) instead. One thread (its kept prompt caches take ~13.6 GiB); a
# finished step is skipped (the script resumes). Validation AUC by epoch: $RUNS/qv_r8/training_history.json
# next to the shipped adapter's; test report: results/eq_recipe (the shipped adapter's and the
# baselines' columns reused from results/eq), with a paired bootstrap against the shipped adapter.
#   bash scripts/eq_recipe.sh     (~70 min training + ~20 min evaluation on one thread)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/eq_common.sh
train_mix
if [[ ! -s "$RUNS/qv_r8/training_history.json" ]]; then
  { time introlm_train "$RUNS/qv_r8" --threads 1 --lora-r 8 --lora-alpha 16 --target-modules q_proj v_proj; } \
    >"$RUNS/qv_r8.log" 2>&1
fi
eq_eval_lane qv_r8 "$RUNS/qv_r8"
"$BIN/introroute" eval --targets self --log "$EQ" --splits test test_unseen --out results/eq_recipe \
  --scorer introlm=results/eq/predictions.jsonl --scorer qv_r8="$RUNS/ev_qv_r8/predictions.jsonl" \
  --scorer minilm_ft=results/eq/predictions.jsonl --scorer probe=results/eq/predictions.jsonl
cp "$RUNS/qv_r8/training_history.json" results/eq_recipe/training_history_qv_r8.json
"$BIN/python" scripts/paired_auc.py "$RUNS/ev_qv_r8/predictions.jsonl:qv_r8" results/eq/predictions.jsonl:introlm \
  --out results/eq_recipe/paired_qv_r8_vs_introlm.json
