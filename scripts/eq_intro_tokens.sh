#!/usr/bin/env bash
# Issue 9's recipe option "1 to 3 [INTRO] tokens" (mean-pooled), measured on a reduced budget for CPU
# time: `self` only, 3,000 seeded EntityQuestions train records, 2 epochs, the full validation split
# (1,486 records, within-relation AUC), otherwise the shipped recipe (scripts/eq_common.sh, paper
# placement r=32). One run per k on one thread; a finished run is skipped (the script resumes).
# Summary: results/eq_recipe/intro_tokens.json.
#   bash scripts/eq_intro_tokens.sh     (~1 h on one thread)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/eq_common.sh
for k in 1 2 3; do
  [[ -s "$RUNS/intro_k$k/training_history.json" ]] && continue
  { time "$BIN/introroute" train --overwrite --log "$EQ" --targets self --out "$RUNS/intro_k$k" "${RECIPE[@]}" --epochs 2 \
    --limit-train 3000 --lora-r 32 --lora-alpha 64 --num-intro-tokens "$k" --threads 1; } \
    >"$RUNS/intro_k$k.log" 2>&1
done
mkdir -p results/eq_recipe
"$BIN/python" - "$RUNS" results/eq_recipe/intro_tokens.json <<'PY'
import json, sys
from pathlib import Path
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
summary = {}
for k in (1, 2, 3):
    h = json.loads((runs / f"intro_k{k}" / "training_history.json").read_text())
    summary[f"k={k}"] = {"best_epoch": h["best_epoch"], "seconds": h["seconds"],
                         "val_auc_self_by_epoch": [row["val_auc/self"] for row in h["history"]]}
out.write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
PY
