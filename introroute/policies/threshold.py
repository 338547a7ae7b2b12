"""``threshold``: the cheapest tier whose own P(success) reaches ``tau`` answers.

With two tiers this is the paper's rule (score >= tau -> the cheap tier, else the expensive one);
with more it is a cascade that stops at the first tier confident enough, and the last tier answers
whatever no cheaper tier is confident about (it needs no score of its own).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from introroute.errors import PolicyError
from introroute.policies.base import KnobGrid, Policy, PolicyChoice, RequestContext, TierInfo, check_number


class ThresholdPolicy(Policy):
    """Route to the first tier (cheap -> expensive) with P(success) >= ``tau``."""

    name = "threshold"
    knob = "tau"

    def __init__(self, tau: float = 0.5) -> None:
        self.tau = check_number("tau", tau, 0.0, 1.0)

    def decide(self, scores: Mapping[str, float], context: RequestContext) -> PolicyChoice:
        for tier in context.tiers[:-1]:
            p = context.score(tier, scores)
            if p >= self.tau:
                return PolicyChoice(tier.name, {"p": p})
        return PolicyChoice(context.tiers[-1].name, {})

    def decide_many(
        self, scores: np.ndarray, tiers: Sequence[TierInfo], prompt_tokens: np.ndarray
    ) -> np.ndarray:
        """:meth:`decide` for every row at once: the first tier with p >= tau, else the last."""
        choice = np.full(len(scores), len(tiers) - 1)
        open_rows = np.ones(len(scores), dtype=bool)
        for t, tier in enumerate(tiers[:-1]):
            p = scores[:, t]
            if np.isnan(p[open_rows]).any():
                raise PolicyError(
                    f"the scores have no probability for target {tier.target!r} (tier {tier.name!r})"
                )
            take = open_rows & (p >= self.tau)
            choice[take] = t
            open_rows &= ~take
        return choice

    def knob_grid(self, scores: np.ndarray, tiers: Sequence[TierInfo], prompt_tokens: np.ndarray) -> KnobGrid:
        """Every distinct routing: ``tau`` changes it only when it crosses a score of a non-last
        tier, so the distinct scores (plus 1.0 to send everything up, when no score is 1) are all."""
        column = scores[:, :-1]
        distinct = np.unique(column[np.isfinite(column)])
        distinct = distinct[(distinct >= 0) & (distinct <= 1)]
        values = distinct
        low = np.r_[-np.inf, distinct[:-1]]
        high = distinct.copy()
        if not len(distinct) or distinct[-1] < 1.0:
            top = distinct[-1] if len(distinct) else -np.inf
            values, low, high = np.r_[values, 1.0], np.r_[low, top], np.r_[high, 1.0]
        return KnobGrid("tau", values, low, high, include_high=True)
