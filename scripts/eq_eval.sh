#!/usr/bin/env bash
# Issue 9 evaluation on SmolLM2's own EntityQuestions outcomes (docs/results-factual-qa.md): the IntroLM
# adapter trained by scripts/eq_results.sh (paper placement r=32) and the no-LoRA ablation
# ($RUNS/introlm_nolora), against the baselines fitted there, on held-out entities (test) and 3 unseen
# relations (test_unseen); then the shipped `self` head on SmolLM2's MMLU answers and on a mixed log.
# The two IntroLM scorers run in two lanes of one thread (a lane whose predictions exist is skipped: the
# script resumes); the report joins them (--scorer NAME=predictions.jsonl).
#   RUNS=runs/eq bash scripts/eq_eval.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/eq_common.sh
ev() { "$BIN/introroute" eval --overwrite --targets self --threads 1 --batch-size 16 "$@"; }
eq_eval_lane introlm "$RUNS/introlm" &
eq_eval_lane nolora "$RUNS/introlm_nolora" &
wait
ev --log "$EQ" --splits test test_unseen --out results/eq \
  --scorer introlm="$RUNS/ev_introlm/predictions.jsonl" --scorer nolora="$RUNS/ev_nolora/predictions.jsonl" --scorer minilm_ft="$RUNS/minilm_ft" \
  --scorer minilm_lr="$RUNS/minilm_lr" --scorer probe="$RUNS/probe" --scorer prior="$RUNS/prior" --scorer random
for split in test test_unseen; do
  "$BIN/introroute" deferral --predictions results/eq/predictions.jsonl --splits "$split" \
    --reliability 0.95 --versus minilm_ft --out "results/eq/deferral_$split"
done
# The EntityQuestions-only tau for reliability 0.95 on validation (0.802: the previous preset's;
# policies/threshold.yaml's tau 0.906 now comes from scripts/selfcal.sh, fitted per source).
[[ -s "$RUNS/ev_val/predictions.jsonl" ]] || ev --log "$EQ" --splits validation --bootstrap 10 --out "$RUNS/ev_val" \
  --scorer introlm="$RUNS/introlm"
"$BIN/introroute" tau "$RUNS/ev_val/predictions.jsonl" --reliability 0.95
# The same `self` head where SmolLM2 is below chance (MMLU) and on a log mixing both kinds of traffic.
ev --log self_smollm2_mmlu --splits test test_unseen --out results/eq_mmlu --scorer introlm="$RUNS/introlm" --scorer random
ev --log "$EQ" self_smollm2_mmlu --splits test test_unseen --out results/eq_mixed --scorer random \
  --scorer introlm="$RUNS/ev_introlm/predictions.jsonl,results/eq_mmlu/predictions.jsonl"
