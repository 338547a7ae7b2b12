#!/usr/bin/env bash
# Reproduces docs/results-routing.md: replays routing over RouteLLM's MMLU log (plus SmolLM2's own outcomes)
# with the scores in results/mmlu/predictions.jsonl (written by scripts/mmlu_results.sh), then fits
# a threshold with `introroute calibrate` on one split and reports it on unseen subjects. ~1 min.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
export HF_HUB_OFFLINE=1
LOGS=(--log routellm_mmlu self_smollm2_mmlu)
P=results/mmlu/predictions.jsonl
for router in routellm_mmlu_2tier mmlu_3tier; do
  "$BIN/introroute" eval --overwrite --routing --predictions "$P" "${LOGS[@]}" --router "policies/$router.yaml" \
    --out "results/routing/$router"
done
mkdir -p results/calibrate
# Fit tau on the 1,065 test records of seen subjects, report on the 435 of 7 unseen subjects.
"$BIN/introroute" calibrate --overwrite "${LOGS[@]}" --router policies/routellm_mmlu_2tier.yaml --predictions "$P" \
  --reliability 0.75 --fit-split test --report-split test_unseen --recalibrate platt \
  --out results/calibrate/routellm_mmlu_2tier.fitted.yaml --json results/calibrate/report.json
# Per-tier heads need calibrated probabilities for cost_aware: fit Platt maps for the three heads
# (and lam) on test, then replay the calibrated router on test_unseen only (out of sample).
"$BIN/introroute" calibrate --overwrite "${LOGS[@]}" --router policies/mmlu_3tier.yaml --predictions "$P" \
  --reliability 0.75 --fit-split test --report-split test_unseen --recalibrate platt \
  --out results/calibrate/mmlu_3tier.fitted.yaml --json results/calibrate/report_3tier.json
"$BIN/introroute" eval --overwrite --routing --predictions "$P" "${LOGS[@]}" --router results/calibrate/mmlu_3tier.fitted.yaml \
  --calibrated-scorer introlm --scorers introlm --splits test_unseen --out results/routing/mmlu_3tier_calibrated
