"""The shipped presets make non-trivial decisions with the shipped adapter (issue 11, item 7).

A preset whose tier target had no head (``gpt-3.5-turbo-1106`` in ``cost_aware.yaml``) loaded
and then sent every request to one tier. Here the packaged gatekeeper scores a set of varied
prompts once; each preset's real router then decides on those scores (a replaying gatekeeper, so
the model is not run once per preset) and must use a head for every tier, never fall back to a
policy default, and spread the prompts over more than one tier.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from introroute.router import Router, load_config

ROOT = Path(__file__).resolve().parents[1]
PRESETS = [
    p
    for p in [*sorted((ROOT / "policies").glob("*.yaml")), ROOT / "examples" / "openai_and_local.yaml"]
    if "adapter: adapters/" not in p.read_text()  # routerbench_3tier: its adapter is still to be trained
]
PROMPTS = [
    "Hi!",
    "Say hello in French.",
    "What colour is the sky on a clear day?",
    "What is the capital of France?",
    "What is 2 + 2?",
    "Translate 'good morning' into Japanese and explain the honorifics.",
    "Which of the following is a noble gas? A) Oxygen B) Argon C) Nitrogen D) Hydrogen",
    "Summarise the causes of the First World War in three sentences.",
    "Write a Python function that returns the n-th Fibonacci number.",
    "A train leaves at 3pm at 60 mph; another at 4pm at 80 mph. When does the second catch up?",
    "What is the derivative of x^3 sin(x)?",
    "Prove that there are infinitely many primes p such that p + 2 is also prime.",
]


@dataclass
class _Prefill:
    scores: dict[str, float]
    prompt_tokens: int = 16
    truncated: bool = False


class Replay:
    """The packaged gatekeeper's scores, computed once, replayed to every preset's router."""

    def __init__(self, targets: list[str], scores: dict[str, dict[str, float]]) -> None:
        self._targets, self._scores = targets, scores

    @property
    def targets(self) -> list[str]:
        return list(self._targets)

    def scores(self, messages: Any) -> dict[str, float]:
        return dict(self._scores[messages[-1]["content"]])

    def prefill(self, messages: Any) -> _Prefill:
        return _Prefill(self.scores(messages))

    def generate_from(self, prefill: Any, **kwargs: Any) -> Any:
        raise AssertionError("routing only: nothing is generated")


@pytest.fixture(scope="module")
def packaged_scores() -> Replay:
    from introroute.gatekeeper import IntroLM

    gk = IntroLM.from_pretrained()
    scores = {q: gk.scores([{"role": "user", "content": q}]) for q in PROMPTS}
    print("\n" + json.dumps({q[:30]: {t[:12]: round(p, 3) for t, p in s.items()} for q, s in scores.items()}))
    return Replay(gk.targets, scores)


@pytest.mark.slow
@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_decisions_use_real_heads_and_are_not_all_one_tier(path, packaged_scores, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-presets")
    config = load_config(path)  # checked against the packaged adapter's heads
    router = Router(config, gatekeeper=packaged_scores)
    decisions = [router.route([{"role": "user", "content": q}], max_tokens=256) for q in PROMPTS]
    targets = {t.target for t in config.tiers}
    for d in decisions:
        assert d.fail_safe_reason is None and targets <= set(d.scores)
        if "p" in d.policy_detail and isinstance(d.policy_detail["p"], dict):  # cost_aware: per tier
            assert d.policy_detail["p"] == {t.name: d.scores[t.target] for t in config.tiers}
    chosen = [d.tier for d in decisions]
    print(path.name, chosen)
    if len(config.tiers) > 1:
        assert len(set(chosen)) > 1, f"{path.name} sends every prompt to {chosen[0]!r}"
