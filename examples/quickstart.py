"""Route a few questions offline: the packaged gatekeeper answers locally when it predicts it will
answer well, and a (mocked) large model answers the rest.

Run: ``python examples/quickstart.py``. No API key or network is needed: the large tier is a
LiteLLM ``mock_response``. Replace its ``litellm_params`` with a real model to go live.
"""

from __future__ import annotations

import os

# Use LiteLLM's bundled price table instead of fetching it (this example runs offline).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm

import introroute

CONFIG = {
    "name": "quickstart",
    "gatekeeper": {"base": "smollm2-135m-instruct"},  # packaged model + adapter
    "tiers": [
        {"name": "local", "target": "self"},  # answered in-process from the scoring prefill
        {
            "name": "large",
            "target": "gpt-4-1106-preview",
            "litellm_params": {"model": "openai/gpt-4o", "mock_response": "(the large model's answer)"},
        },
    ],
    "policy": {"type": "threshold", "params": {"tau": 0.5}},
    "fallbacks": {"local": "large"},
}

QUESTIONS = [
    "What is the capital of France?",
    "Prove that there are infinitely many primes p such that p + 2 is also prime.",
]


def main() -> None:
    router = introroute.Router.from_dict(CONFIG)
    for question in QUESTIONS:
        response = router.completion(messages=[{"role": "user", "content": question}], max_tokens=48)
        decision = introroute.decision(response)
        assert decision is not None
        print(f"Q: {question}")
        decide_ms = decision.gatekeeper_ms or 0.0
        print(f"   scores={decision.scores} -> tier={decision.tier} ({decide_ms:.0f} ms to decide)")
        print(f"A: {response.choices[0].message.content}\n")

    # The same router through LiteLLM itself, streaming: only the model string changes.
    stream = litellm.completion(
        model="introroute/quickstart",
        messages=[{"role": "user", "content": "Name three primary colours."}],
        max_tokens=32,
        stream=True,
    )
    print("streamed:", "".join(chunk.choices[0].delta.content or "" for chunk in stream))


if __name__ == "__main__":
    main()
