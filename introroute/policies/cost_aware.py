"""``cost_aware``: maximise expected value minus cost over N tiers.

Utility of tier i = P_i(success) * value - lam * cost_i(USD) - latency_weight * latency_i(s).
P_i is the gatekeeper's probability for the tier's target where it has one (IntroLM scores
several targets from one prefill); a tier whose target is not scored (typically the strongest,
used as the reference) gets ``unscored_p``. Costs use the request's prompt tokens and an expected
answer length (``output_tokens``, capped by the request's ``max_tokens``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from introroute.policies.base import Policy, PolicyChoice, RequestContext, TierInfo, check_number


class CostAwarePolicy(Policy):
    """Pick the tier with the highest ``p * value - lam * cost - latency_weight * latency``."""

    name = "cost_aware"

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
