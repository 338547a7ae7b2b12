#!/usr/bin/env bash
# Reproduces docs/results-factual-qa.md (issue 9) and the shipped default adapter, on SmolLM2's own
# EntityQuestions outcomes (`self_smollm2_entityquestions`, made by scripts/eq_labels.sh):
# IntroLM vs the external classifier, the hidden-state probe and the priors on the same splits (train
# by entity on 4 relations; test: held-out entities of those relations + 3 relations never seen).
# The shipped adapter is trained multi-target: `self` on the factual questions, the Mixtral/GPT-4 heads
# on RouteLLM's MMLU log (the same seeded 1,500 train / 300 validation records as before), masked BCE.
# Two lanes of one torch thread run side by side on a 2-core machine; logs in $RUNS/*.log.
#   bash scripts/eq_results.sh          (~2 h on 2 cores: IntroLM 68 min, its first epoch 33 min building the prompt caches)
#   SHIP=1 bash scripts/eq_results.sh   (also copies the trained adapter into the package)
#   MMLU_TRAIN=all PROMPT_CACHE=disk SHIP=1 bash scripts/eq_results.sh
#                                       (remote heads on all 7,579 MMLU train records; not run yet, ~3 h)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/eq_common.sh

train_mix
introlm() {  # the paper's placement: LoRA r=32/alpha=64 on q,o,gate,up,down (k/v frozen)
  introlm_train "$RUNS/introlm" --lora-r 32 --lora-alpha 64 --threads 1 --prompt-cache "${PROMPT_CACHE:-memory}" \
    --cache-dir "$RUNS/caches"
}
baselines() {
  for kind in prior minilm_lr minilm_ft probe; do
    "$BIN/introroute" baseline fit --kind "$kind" --log "$EQ" --targets self --out "$RUNS/$kind" --threads 1
  done
  # The no-LoRA ablation ([INTRO] row + head). The evaluated checkpoint is this run's epoch 1: the
  # run was stopped there for CPU time (docs/results-factual-qa.md).
  "$BIN/introroute" train --overwrite --log "$EQ" --targets self --out "$RUNS/introlm_nolora" --lora-r 0 --epochs 3 \
    --batch-size 16 --prompt-cache memory --threads 1
}
step() { local name=$1; shift; { time "$@"; } >"$RUNS/$name.log" 2>&1; }
step introlm introlm &
step baselines baselines &
wait

RUNS="$RUNS" BIN="$BIN" bash scripts/eq_eval.sh

if [[ "${SHIP:-0}" == 1 ]]; then
  rm -rf introroute/adapters/smollm2-135m-instruct
  cp -r "$RUNS/introlm" introroute/adapters/smollm2-135m-instruct
fi
