#!/usr/bin/env bash
# Issue 9's LoRA placement option side by side with the shipped adapter (paper placement: LoRA r=32/
# alpha=64 on q,o,gate,up,down): the same mix, recipe, seed and 4 epochs with LoRA r=8/alpha=16 on
# q_proj,v_proj (the earlier default) instead. One thread (its kept prompt caches take ~13.6 GiB); a
# finished step is skipped (the script resumes). Validation AUC by epoch: $RUNS/qv_r8/training_history.json
# next to the shipped adapter's; test report: results/eq_recipe (the shipped adapter's and the
# baselines' columns reused from results/eq), with a paired bootstrap against the shipped adapter.
#   bash scripts/eq_recipe.sh              (~80 min training + ~20 min evaluation on one thread)
#   SKIP_TEST=1 bash scripts/eq_recipe.sh  (training and the validation comparison only)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/eq_common.sh
train_mix
if [[ ! -s "$RUNS/qv_r8/training_history.json" ]]; then
  { time introlm_train "$RUNS/qv_r8" --threads 1 --lora-r 8 --lora-alpha 16 --target-modules q_proj v_proj; } \
    >"$RUNS/qv_r8.log" 2>&1
fi
mkdir -p results/eq_recipe
# Validation (1,486 EntityQuestions + 300 MMLU records) by epoch, next to the shipped adapter's run.
"$BIN/python" - "$RUNS/qv_r8/training_history.json" introroute/adapters/smollm2-135m-instruct/training_history.json \
  results/eq_recipe/placement.json <<'PY'
import json, sys
from pathlib import Path
qv, paper, out = (Path(a) for a in sys.argv[1:])
keys = ("val_auc/self", "val_auc/mistralai/Mixtral-8x7B-Instruct-v0.1", "val_auc/gpt-4-1106-preview", "val_auc")
summary = {}
for name, path in (("paper_r32 (shipped)", paper), ("qv_r8", qv)):
    h = json.loads(path.read_text())
    summary[name] = {"best_epoch": h["best_epoch"], "seconds": h["seconds"],
                     "by_epoch": [{k: row[k] for k in ("epoch", "epoch_s", *keys)} for row in h["history"]]}
out.write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
PY
[[ "${SKIP_TEST:-0}" == 1 ]] && exit 0  # this session's run: the test evaluation below was not run (CPU time)
eq_eval_lane qv_r8 "$RUNS/qv_r8"
"$BIN/introroute" eval --overwrite --targets self --log "$EQ" --splits test test_unseen --out results/eq_recipe \
  --scorer introlm=results/eq/predictions.jsonl --scorer qv_r8="$RUNS/ev_qv_r8/predictions.jsonl" \
  --scorer minilm_ft=results/eq/predictions.jsonl --scorer probe=results/eq/predictions.jsonl
cp "$RUNS/qv_r8/training_history.json" results/eq_recipe/training_history_qv_r8.json
"$BIN/introroute" paired-auc "$RUNS/ev_qv_r8/predictions.jsonl:qv_r8" results/eq/predictions.jsonl:introlm \
  --out results/eq_recipe/paired_qv_r8_vs_introlm.json
