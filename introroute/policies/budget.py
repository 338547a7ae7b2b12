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

import math
import threading
from collections import deque
from collections.abc import Mapping

from introroute.errors import PolicyError
from introroute.policies.base import Policy, PolicyChoice, RequestContext, check_number


class BudgetPolicy(Policy):
    """Threshold routing whose ``tau`` tracks a target expensive-tier share over a sliding window."""

    name = "budget"

    def __init__(
        self, target_share: float = 0.2, window: int = 100, tau: float = 0.5, warmup: int = 20
    ) -> None:
        self.target_share = check_number("target_share", target_share, 0.0, 1.0)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise PolicyError(f"window must be an integer >= 1, got {window!r}")
        self.window = window
        self.tau = check_number("tau", tau, 0.0, 1.0)
        self.warmup = int(check_number("warmup", warmup))
        self._limit = math.floor(self.target_share * window + 1e-9)
        self._scores: deque[float] = deque(maxlen=window)
        self._went_up: deque[bool] = deque(maxlen=window - 1)
        self._lock = threading.Lock()

    def current_tau(self) -> float:
        """The threshold now: the initial ``tau`` until ``warmup`` scores, then the window quantile."""
        if len(self._scores) < max(self.warmup, 1):
            return self.tau
        ranked = sorted(self._scores)
        # At most floor(share * n) of the recent scores lie strictly below ranked[k].
        k = min(math.floor(self.target_share * len(ranked)), len(ranked) - 1)
        return ranked[k]

    def decide(self, scores: Mapping[str, float], context: RequestContext) -> PolicyChoice:
        cheap, expensive = context.tiers[0], context.tiers[-1]
        if cheap is expensive:
            return PolicyChoice(cheap.name, {})
        p = context.score(cheap, scores)
        with self._lock:
            tau = self.current_tau()
            wants_up = p < tau
            capped = wants_up and sum(self._went_up) + 1 > self._limit
            went_up = wants_up and not capped
            self._scores.append(p)
            self._went_up.append(went_up)
            share = sum(self._went_up) / len(self._went_up) if self._went_up else 0.0
        tier = expensive if went_up else cheap
        return PolicyChoice(tier.name, {"p": p, "tau": tau, "capped": capped, "share": share})
