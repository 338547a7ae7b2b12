"""Shared pieces of the router benchmarks: short factual questions and a router around a gatekeeper.

Factual questions are what a cheap local tier is for, and they are short (~35-42 tokens with
SmolLM2's chat template, whose default system prompt alone is ~20), which is where per-call
costs matter most.
"""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline, no price-map fetch

from introroute.router import Router

_SUBJECTS = [
    ("capital", ["France", "Japan", "Kenya", "Peru", "Norway", "Vietnam", "Egypt", "Canada"]),
    ("currency", ["Brazil", "India", "Sweden", "Mexico", "Poland", "Thailand", "Chile", "Ghana"]),
    ("largest city", ["Australia", "Turkey", "Nigeria", "Germany", "Spain", "Morocco", "Italy", "Iran"]),
    ("official language", ["Austria", "Angola", "Belgium", "Laos", "Qatar", "Haiti", "Malta", "Mali"]),
]


def questions(n: int) -> list[list[dict[str, str]]]:
    """``n`` single-turn factual questions (cycling through 32 distinct ones)."""
    pool = [f"What is the {what} of {country}?" for what, countries in _SUBJECTS for country in countries]
    return [[{"role": "user", "content": pool[i % len(pool)]}] for i in range(n)]


def router(
    gatekeeper: Any, name: str, routing_log: Path | None = None, local: bool = True, **gatekeeper_options: Any
) -> Router:
    """A threshold router: the local tier (or, ``local=False``, a remote small tier: every request
    is then scores only), and a LiteLLM ``mock_response`` large tier."""
    small: dict[str, Any] = {"name": "local", "target": "self"}
    if not local:
        small = {
            "name": "small",
            "target": "self",
            "litellm_params": {"model": "openai/gpt-4o-mini", "mock_response": "(small)"},
        }
    config = {
        "name": name,
        "gatekeeper": gatekeeper_options,
        "tiers": [
            small,
            {
                "name": "large",
                "target": "gpt-4-1106-preview",
                "litellm_params": {"model": "openai/gpt-4o", "mock_response": "(large)"},
                "price": {"input_per_1m": 2.5, "output_per_1m": 10},
            },
        ],
        "policy": {"type": "threshold", "params": {"tau": 0.5}},
        "fallbacks": {small["name"]: "large"},
        "routing_log": str(routing_log) if routing_log else None,
    }
    return Router.from_dict(config, gatekeeper=gatekeeper)


def rss_mib() -> float:
    """Resident memory of this process now (MiB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_result(path: Path, result: dict[str, Any]) -> None:
    """Print the result and write it as JSON (the file the docs/benchmarks.md table cites)."""
    print(json.dumps(result, indent=2))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
