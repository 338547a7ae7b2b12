"""``cost_aware``: maximise expected value minus cost over N tiers.

Utility of tier i = P_i(success) * value - lam * cost_i(USD) - latency_weight * latency_i(s).
P_i is the gatekeeper's probability for the tier's target where it has one (IntroLM scores
several targets from one prefill); a tier whose target is not scored (typically the strongest,
used as the reference) gets ``unscored_p``. Costs use the request's prompt tokens and an expected
answer length (``output_tokens``, capped by the request's ``max_tokens``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from introroute.policies.base import KnobGrid, Policy, PolicyChoice, RequestContext, TierInfo, check_number


class CostAwarePolicy(Policy):
    """Pick the tier with the highest ``p * value - lam * cost - latency_weight * latency``."""

    name = "cost_aware"
    knob = "lam"

    def __init__(
        self,
        lam: float = 100.0,
        value: float = 1.0,
        output_tokens: int = 256,
        unscored_p: float = 1.0,
        latency_weight: float = 0.0,
    ) -> None:
        self.lam = check_number("lam", lam)
        self.value = check_number("value", value)
        self.output_tokens = int(check_number("output_tokens", output_tokens))
        self.unscored_p = check_number("unscored_p", unscored_p, 0.0, 1.0)
        self.latency_weight = check_number("latency_weight", latency_weight)

    def check_tiers(self, tiers: Sequence[TierInfo]) -> None:
        for tier in tiers:
            tier.cost_usd(0, 0)  # raises PolicyError naming a tier without a price

    def decide(self, scores: Mapping[str, float], context: RequestContext) -> PolicyChoice:
        out_tokens = min(self.output_tokens, context.max_tokens or self.output_tokens)
        probs = {t.name: float(scores.get(t.target, self.unscored_p)) for t in context.tiers}
        utilities = {
            t.name: probs[t.name] * self.value
            - self.lam * t.cost_usd(context.prompt_tokens, out_tokens)
            - self.latency_weight * t.latency_s(out_tokens)
            for t in context.tiers
        }
        # max() keeps the first of equal utilities, i.e. the cheaper tier wins ties.
        best = max(utilities, key=utilities.__getitem__)
        return PolicyChoice(best, {"p": probs, "utility": utilities})

    def utilities(
        self, scores: np.ndarray, tiers: Sequence[TierInfo], prompt_tokens: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(P, C, L)`` per row and tier as :meth:`decide` sees them: probabilities (unscored ->
        ``unscored_p``), expected cost and latency at the policy's own ``output_tokens``."""
        out_tokens = self.output_tokens
        probs = np.where(np.isnan(scores), self.unscored_p, scores)
        costs = np.stack(
            [(prompt_tokens * t.input_per_1m + out_tokens * t.output_per_1m) / 1e6 for t in tiers], axis=1
        )
        latencies = np.array([t.latency_s(out_tokens) for t in tiers])
        return probs, costs, np.broadcast_to(latencies, probs.shape)

    def decide_many(
        self, scores: np.ndarray, tiers: Sequence[TierInfo], prompt_tokens: np.ndarray
    ) -> np.ndarray:
        """:meth:`decide` for every row: the same arithmetic in the same order, so the same floats;
        ``argmax`` keeps the first of equal utilities, as ``max`` does there."""
        probs, costs, latencies = self.utilities(scores, tiers, prompt_tokens)
        utility = probs * self.value - self.lam * costs - self.latency_weight * latencies
        return np.argmax(utility, axis=1)

    def knob_grid(self, scores: np.ndarray, tiers: Sequence[TierInfo], prompt_tokens: np.ndarray) -> KnobGrid:
        """Every distinct routing: the choice between tiers i and j of a row flips at
        ``lam = ((P_i - P_j) * value - w * (L_i - L_j)) / (C_i - C_j)``; one value inside each gap
        between those break points (and 0 and beyond the last) covers every routing."""
        probs, costs, latencies = self.utilities(scores, tiers, prompt_tokens)
        points = []
        for i in range(len(tiers)):
            for j in range(i + 1, len(tiers)):
                gain = (probs[:, i] - probs[:, j]) * self.value - self.latency_weight * (
                    latencies[:, i] - latencies[:, j]
                )
                spread = costs[:, i] - costs[:, j]
                with np.errstate(divide="ignore", invalid="ignore"):
                    points.append(gain / spread)
        breaks = np.unique(np.concatenate(points)) if points else np.array([])
        breaks = breaks[np.isfinite(breaks) & (breaks > 0)]
        if not len(breaks):
            return KnobGrid(
                "lam", np.array([0.0]), np.array([-np.inf]), np.array([np.inf]), include_high=False
            )
        values = np.r_[0.0, (breaks[:-1] + breaks[1:]) / 2, breaks[-1] * 2]
        return KnobGrid("lam", values, np.r_[-np.inf, breaks], np.r_[breaks, np.inf], include_high=False)
