"""``budget``: cap the expensive tier's share of traffic by adapting the threshold online.

Why two mechanisms: the threshold ``tau`` is re-estimated as the ``target_share`` quantile of the
cheap tier's recent scores, so the requests sent up are the ones the cheap tier is least likely
to answer well and the share settles near the target under any score distribution. A hard cap on
top guarantees the promise a budget owner cares about: in every run of ``window`` consecutive
decisions, at most ``floor(target_share * window)`` go to the expensive tier, even while the
quantile is still catching up with a shift in traffic.

The cheap tier is the first, the expensive one the last; tiers in between serve as fallbacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from introroute.errors import PolicyError
from introroute.policies.base import Policy, PolicyChoice, RequestContext, check_number
from introroute.policies.budget_store import WindowSpec, make_window


class BudgetPolicy(Policy):
    """Threshold routing whose ``tau`` tracks a target expensive-tier share over a sliding window.

    ``store``: where the window lives: ``memory`` (default: this process) or
    ``{backend: redis, url: redis://..., key: <router>}`` so that every replica of a deployment
    shares one window and one cap (see :mod:`introroute.policies.budget_store`).
    """

    name = "budget"

    def __init__(
        self,
        target_share: float = 0.2,
        window: int = 100,
        tau: float = 0.5,
        warmup: int = 20,
        store: str | Mapping[str, Any] | None = None,
    ) -> None:
        self.target_share = check_number("target_share", target_share, 0.0, 1.0)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise PolicyError(f"window must be an integer >= 1, got {window!r}")
        self.window = window
        self.tau = check_number("tau", tau, 0.0, 1.0)
        self.warmup = int(check_number("warmup", warmup))
        spec = WindowSpec(target_share=self.target_share, window=window, tau=self.tau, warmup=self.warmup)
        self._window = make_window(spec, store)
        self.store = self._window.describe()  # what decisions record: never the store's credentials

    def current_tau(self) -> float:
        """The threshold now: the initial ``tau`` until ``warmup`` scores, then the window quantile."""
        return self._window.current_tau()

    def decide(self, scores: Mapping[str, float], context: RequestContext) -> PolicyChoice:
        cheap, expensive = context.tiers[0], context.tiers[-1]
        if cheap is expensive:
            return PolicyChoice(cheap.name, {})
        p = context.score(cheap, scores)
        step = self._window.step(p)
        tier = expensive if step.went_up else cheap
        detail = {"p": p, "tau": step.tau, "capped": step.capped, "share": step.share}
        if step.store != "memory":
            detail.update(store=step.store, seq=step.seq)
        return PolicyChoice(tier.name, detail)
