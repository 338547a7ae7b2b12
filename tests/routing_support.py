"""Synthetic routing logs, predictions and router YAMLs for the routing-eval and calibrate tests.

A query has a latent difficulty ``d``; each tier answers it correctly with a probability that
falls with ``d`` (stronger tiers fall less), and the ``good`` scorer sees ``d`` through noise,
so it ranks queries better than ``random``. Everything is seeded and built in milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from introroute.data.jsonl import write_records
from introroute.data.schema import RoutingRecord, TargetOutcome
from introroute.evaluation.report import prediction_line

# tier target -> probability of a correct answer at difficulty 0 and 1
SKILL = {"self": (0.8, 0.0), "weak": (0.95, 0.2), "strong": (0.97, 0.6)}

REMOTE_TIERS = """\
  - name: small
    target: weak
    litellm_params: {model: openai/gpt-4o-mini}
    price: {input_per_1m: 1.0, output_per_1m: 2.0}
    latency: {ttft_ms: 100, per_output_token_ms: 10}
  - name: big
    target: strong
    litellm_params: {model: openai/gpt-4o}
    price: {input_per_1m: 10.0, output_per_1m: 30.0}
    latency: {ttft_ms: 800, per_output_token_ms: 80}
"""

TWO_TIER_YAML = f"""\
# A test router: weak answers when P(weak) >= tau.
name: synthetic
tiers:
{REMOTE_TIERS}policy:
  type: threshold
  params:
    tau: 0.5   # to be fitted
fail_safe: big
"""

THREE_TIER_YAML = f"""\
# Local, small and big tiers; cost_aware over every tier's head.
name: synthetic3
tiers:
  - name: local
    target: self
    latency: {{ttft_ms: 50, per_output_token_ms: 20}}
{REMOTE_TIERS}policy:
  type: cost_aware
  params: {{lam: 100.0, output_tokens: 400}}
"""


def synthetic(n: int = 400, seed: int = 0, targets: tuple[str, ...] = ("weak", "strong")):
    """``(records, scores)``: records alternate validation/test; ``scores[scorer][target]`` is [n]."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0, 1, n)
    records, scores = [], {"good": {t: np.zeros(n) for t in targets}, "random": {}}
    for target in targets:
        easy, hard = SKILL[target]
        p_true = easy + (hard - easy) * difficulty
        correct = rng.uniform(0, 1, n) < p_true
        scores["good"][target] = np.clip(p_true + rng.normal(0, 0.15, n), 0, 1).round(4)
        scores["random"][target] = rng.uniform(0, 1, n).round(4)
        for i in range(n):
            if target == targets[0]:
                records.append(
                    RoutingRecord(
                        id=f"q/{i}",
                        dataset="synth",
                        subject=f"s{i % 3}",
                        split="validation" if i % 2 == 0 else "test",
                        messages=[{"role": "user", "content": "question " + "x" * (40 + i % 50)}],
                        outcomes={},
                    )
                )
            records[i].outcomes[target] = TargetOutcome(model=target, correct=bool(correct[i]))
    return records, scores


def write_predictions(path: Path, records, scores) -> Path:
    """A predictions.jsonl as ``introroute eval`` writes it."""
    with path.open("w") as handle:
        for i, record in enumerate(records):
            labels = {t: float(o.correct) for t, o in record.outcomes.items()}
            by_scorer = {name: {t: float(v[i]) for t, v in by.items()} for name, by in scores.items()}
            handle.write(json.dumps(prediction_line(record, labels, by_scorer)) + "\n")
    return path


def write_setup(tmp: Path, n: int = 400, seed: int = 0, three: bool = False) -> dict[str, Path]:
    """Log, predictions and router YAML files in ``tmp``."""
    targets = ("self", "weak", "strong") if three else ("weak", "strong")
    records, scores = synthetic(n, seed, targets)
    log = tmp / "log.jsonl"
    write_records(log, records)
    router = tmp / "router.yaml"
    router.write_text(THREE_TIER_YAML if three else TWO_TIER_YAML)
    return {
        "log": log,
        "predictions": write_predictions(tmp / "predictions.jsonl", records, scores),
        "router": router,
    }
