#!/usr/bin/env bash
# Issue 23 item 1: the verbalised head (P(success) = the LM's yes/no odds at [INTRO], no linear head)
# against the linear head, on scripts/eq_intro_tokens.sh's reduced budget for CPU time: `self` only,
# 3,000 seeded EntityQuestions train records, 2 epochs, the full validation split (1,486 records,
# within-relation AUC), the shipped recipe (paper placement r=32). The linear side is that script's
# k=1 run (same command without --head). A finished run is skipped (the script resumes).
# Summary: results/eq_recipe/verbalised.json. FULL=1 also evaluates both on the test splits (held-out
# entities + unseen relations) with a paired bootstrap (introroute paired-auc).
#   bash scripts/eq_verbalised.sh     (~15-25 min per run on one thread)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/eq_common.sh
train_reduced() {  # train_reduced OUT [options...]
  local out=$1; shift
  [[ -s "$out/training_history.json" ]] && return 0
  { time "$BIN/introroute" train --log "$EQ" --targets self --out "$out" "${RECIPE[@]}" --epochs 2 \
    --limit-train 3000 --lora-r 32 --lora-alpha 64 --threads 1 "$@"; } >"$out.log" 2>&1
}
train_reduced "$RUNS/intro_k1" --num-intro-tokens 1
train_reduced "$RUNS/verbalised" --head verbalised
mkdir -p results/eq_recipe
"$BIN/python" - "$RUNS" results/eq_recipe/verbalised.json <<'PY'
import json, sys
from pathlib import Path
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
summary = {}
for name, run in (("linear", "intro_k1"), ("verbalised", "verbalised")):
    h = json.loads((runs / run / "training_history.json").read_text())
    summary[name] = {"best_epoch": h["best_epoch"], "seconds": h["seconds"],
                     "val_auc_self_by_epoch": [row["val_auc/self"] for row in h["history"]]}
out.write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
PY
[[ "${FULL:-0}" == 1 ]] || exit 0
eq_eval_lane linear_k1 "$RUNS/intro_k1"
eq_eval_lane verbalised "$RUNS/verbalised"
pair=("$RUNS/ev_verbalised/predictions.jsonl:verbalised" "$RUNS/ev_linear_k1/predictions.jsonl:linear_k1")
"$BIN/introroute" paired-auc "${pair[@]}" --out results/eq_recipe/paired_verbalised_vs_linear.json
for split in test test_unseen; do  # held-out entities of seen relations; unseen relations
  "$BIN/introroute" paired-auc "${pair[@]}" --splits "$split" \
    --out "results/eq_recipe/paired_verbalised_vs_linear_$split.json"
done
