"""``threshold``: the cheapest tier whose own P(success) reaches ``tau`` answers.

With two tiers this is the paper's rule (score >= tau -> the cheap tier, else the expensive one);
with more it is a cascade that stops at the first tier confident enough, and the last tier answers
whatever no cheaper tier is confident about (it needs no score of its own).
"""

from __future__ import annotations

from collections.abc import Mapping

from introroute.policies.base import Policy, PolicyChoice, RequestContext, check_number


class ThresholdPolicy(Policy):
    """Route to the first tier (cheap -> expensive) with P(success) >= ``tau``."""

    name = "threshold"

    def __init__(self, tau: float = 0.5) -> None:
        self.tau = check_number("tau", tau, 0.0, 1.0)

    def decide(self, scores: Mapping[str, float], context: RequestContext) -> PolicyChoice:
        for tier in context.tiers[:-1]:
            p = context.score(tier, scores)
            if p >= self.tau:
                return PolicyChoice(tier.name, {"p": p})
        return PolicyChoice(context.tiers[-1].name, {})
