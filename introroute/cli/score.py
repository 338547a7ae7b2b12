"""``introroute score``: the gatekeeper's probabilities for a query, and optionally the local answer.

The answer (``--answer``) continues from the scoring prefill: no second prefill is run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from introroute.errors import MessagesError
from introroute.gatekeeper.spec import ModelSpec, add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("question", nargs="?", help="the user message to score")
    parser.add_argument("--messages", type=Path, help="a JSON file with a list of chat messages instead")
    add_model_arguments(parser, max_context=False, prefix_cache=False)
    parser.add_argument("--answer", action="store_true", help="also generate the local model's answer")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="answer length at most (--answer)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--explain",
        type=Path,
        metavar="ROUTER_YAML",
        help="also say what the scores mean and which tier this router's policy would pick",
    )


def read_messages(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The conversation from the positional question or ``--messages`` (exactly one of them)."""
    if (args.question is None) == (args.messages is None):
        raise MessagesError("give either a question or --messages FILE, not both or neither")
    if args.question is not None:
        return [{"role": "user", "content": args.question}]
    try:
        data = json.loads(args.messages.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MessagesError(f"cannot read --messages file {args.messages}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise MessagesError(f"{args.messages} is not valid JSON: line {exc.lineno}: {exc.msg}") from exc
    if isinstance(data, dict) and "messages" in data:
        data = data["messages"]
    return data


def main(args: argparse.Namespace) -> int:
    messages = read_messages(args)
    started = time.perf_counter()
    gatekeeper = ModelSpec.from_args(args).load()
    loaded = time.perf_counter()
    prefill = gatekeeper.prefill(messages)
    report: dict[str, Any] = {
        "scores": prefill.scores,
        "trained": gatekeeper.trained,
        "prompt_tokens": prefill.prompt_tokens,
        "truncated": prefill.truncated,
        "ignored_parts": prefill.ignored_parts,
        "timings_s": {"load": loaded - started, "prefill": prefill.timings["total_s"]},
        "device": str(gatekeeper.device),
        "dtype": str(gatekeeper.dtype).removeprefix("torch."),
    }
    if args.answer:
        generated = time.perf_counter()
        answer = gatekeeper.generate_from(prefill, max_new_tokens=args.max_new_tokens)
        report["answer"] = answer.text
        report["finish_reason"] = answer.finish_reason
        report["completion_tokens"] = answer.completion_tokens
        report["timings_s"]["generate"] = time.perf_counter() - generated
    if args.explain:
        report["routing"] = _would_route(args.explain, report["scores"], prefill.prompt_tokens)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        _print_report(report)
    return 0


def _would_route(path: Path, scores: dict[str, float], prompt_tokens: int) -> dict[str, Any]:
    """The tier the router YAML's policy would pick for these scores, without calling any model.

    Only the tiers and the policy are read (no ``${ENV}`` substitution, no provider checks), so
    the explanation needs no API key.
    """
    import yaml

    from introroute.policies import RequestContext, TierInfo, build_policy

    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    tiers = tuple(
        TierInfo(name=t["name"], target=t["target"], local="litellm_params" not in t) for t in config["tiers"]
    )
    policy = config["policy"]
    choice = build_policy(policy["type"], dict(policy.get("params") or {})).decide(
        scores, RequestContext(tiers=tiers, prompt_tokens=prompt_tokens)
    )
    chosen = next(t for t in tiers if t.name == choice.tier)
    return {
        "router": str(path),
        "policy": policy["type"],
        "params": dict(policy.get("params") or {}),
        "tier": chosen.name,
        "local": chosen.local,
    }


EXPLANATION = """\
What the numbers mean:
  self  = P(SmolLM2-135M itself answers this well), read from its own prefill by the [INTRO]
          head. It was trained on SmolLM2's graded answers to ~10,000 factual questions
          (EntityQuestions) and ranks famous facts above the long tail, but it is not a calibrated
          probability: on common facts a wrong answer can score high (the capital of Bhutan, 0.87).
          Routers use a fitted threshold: the threshold preset's was fitted so that at most 5% of
          questions are kept local and answered wrongly on each of EntityQuestions, capitals of
          countries and general recall questions (docs/results-factual-qa.md); above it, 1 local answer in 3
          (EntityQuestions) or in 6 (capitals of countries) is still wrong.
  other = P(that remote model answers well), learned from RouteLLM's MMLU log (7,579 train
          questions). These heads are weak (within-subject ROC-AUC 0.60 Mixtral, 0.66 GPT-4):
          treat them as a rough prior."""


def _print_report(report: dict[str, Any]) -> None:
    for target, probability in report["scores"].items():
        print(f"P(success | {target}) = {probability:.3f}")
    if not report["trained"]:
        print("note: this gatekeeper's head is untrained; its scores carry no meaning yet")
    truncated = " (left-truncated)" if report["truncated"] else ""
    print(f"prompt tokens: {report['prompt_tokens']}{truncated}")
    for part in report["ignored_parts"]:
        print(f"ignored (no text): {part}")
    if "answer" in report:
        print(f"answer: {report['answer']}")
        print(f"finish: {report['finish_reason']}, {report['completion_tokens']} tokens")
    print("timings: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in report["timings_s"].items()))
    if "routing" in report:
        routing = report["routing"]
        params = ", ".join(f"{k}={v}" for k, v in routing["params"].items())
        where = "answered locally from this prefill" if routing["local"] else "sent to a remote model"
        print(EXPLANATION)
        print(
            f"Routing: with {routing['router']} ({routing['policy']}, {params}) this question would go "
            f"to tier {routing['tier']!r}: {where}."
        )
