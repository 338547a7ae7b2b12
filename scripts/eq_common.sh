# Shared by the EntityQuestions scripts (eq_results.sh, eq_eval.sh, eq_recipe.sh): paths, targets and
# the training recipe, so a side-by-side run differs from the shipped one only in what it overrides.
# shellcheck shell=bash
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-runs/eq}
EQ=self_smollm2_entityquestions
M=mistralai/Mixtral-8x7B-Instruct-v0.1
G=gpt-4-1106-preview
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$RUNS"

# The shipped adapter's recipe (docs/results-factual-qa.md): cosine with warm-up, clipping, light
# label smoothing, kept prompt caches; placement, rank and [INTRO] count are the caller's.
RECIPE=(--epochs 4 --batch-size 16 --lr 3e-4 --schedule cosine --warmup 0.05 --max-grad-norm 1.0
  --label-smoothing 0.02 --prompt-cache memory)

# The training log: every EntityQuestions record + MMLU's seeded train/validation subsets (the remote
# heads' labels; masked out of the `self` loss and vice versa). MMLU_TRAIN=all takes all 7,579 MMLU
# train records (then pass --prompt-cache disk: the caches need ~25 GiB more).
MIX="$RUNS/train_mix${MMLU_TRAIN:+_$MMLU_TRAIN}.jsonl"
train_mix() {
  [[ -s "$MIX" ]] && return 0
  "$BIN/python" - "$MIX" "${MMLU_TRAIN:-1500}" <<'PY'
import sys
from introroute.data.records import load_log, select
mmlu = load_log("routellm_mmlu")
limit = None if sys.argv[2] == "all" else int(sys.argv[2])
mix = load_log("self_smollm2_entityquestions") + select(mmlu, ["train"], limit, 0) + select(mmlu, ["validation"], 300, 0)
with open(sys.argv[1], "w") as f:
    f.writelines(r.to_json() + "\n" for r in mix)
PY
}

# introlm_train OUT [train options...]: the recipe on the mix, three heads (self, Mixtral, GPT-4).
introlm_train() {
  local out=$1; shift
  "$BIN/introroute" train --overwrite --log "$MIX" --targets self "$M" "$G" --out "$out" "${RECIPE[@]}" "$@"
}

# eq_eval_lane NAME ADAPTER: an adapter's predictions on held-out entities + unseen relations, once
# (a lane whose predictions exist is skipped, so the calling script resumes).
eq_eval_lane() {
  local name=$1 adapter=$2
  [[ -s "$RUNS/ev_$name/predictions.jsonl" ]] && return 0
  { time "$BIN/introroute" eval --overwrite --targets self --threads 1 --batch-size 16 --log "$EQ" --splits test test_unseen \
    --bootstrap 10 --out "$RUNS/ev_$name" --scorer "$name=$adapter"; } >"$RUNS/ev_$name.log" 2>&1
}
