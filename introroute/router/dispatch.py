"""Send the request to the chosen tier through LiteLLM, with retries and then fallbacks.

Why one tenacity loop over all tiers: retrying a tier and falling back to the next are the same
act ("try again, maybe elsewhere"), so :class:`Attempts` decides after each failure whether the
next attempt goes to the same tier (a retryable error, attempts left: back off first) or to the
next tier in the fallback order (anything else: immediately). Tenacity then runs that plan
unchanged for ``litellm.completion`` and ``litellm.acompletion``. The local tier is in-process and
deterministic, so it gets one attempt. Errors mid-stream are not retried: tokens already went out.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import litellm
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception

from introroute.errors import RoutingError
from introroute.router.config import RetryConfig, TierConfig
from introroute.router.secrets import Redactor


class Attempts:
    """The tiers one request may try, in order, and what happened on each attempt."""

    def __init__(
        self,
        tiers: list[TierConfig],
        retries: RetryConfig,
        kwargs_for: Callable[[TierConfig], dict[str, Any]],
        redactor: Redactor,
    ) -> None:
        self.tiers = tiers
        self._retries = retries
        self._retryable = retries.exceptions()
        self._kwargs_for = kwargs_for
        self._redactor = redactor
        self._index = 0
        self._tier_attempts = 0
        self._moved = False
        self.attempts = 0
        self.errors: list[str] = []

    @property
    def tier(self) -> TierConfig:
        """The tier the current (or last) attempt went to."""
        return self.tiers[self._index]

    @property
    def fallbacks_used(self) -> list[str]:
        """Tiers tried after the first one."""
        return [t.name for t in self.tiers[1 : self._index + 1]]

    def kwargs(self) -> dict[str, Any]:
        """Count an attempt and return the LiteLLM arguments for the current tier."""
        self.attempts += 1
        self._tier_attempts += 1
        return self._kwargs_for(self.tier)

    def _again(self, exc: BaseException) -> bool:
        """Tenacity's retry predicate: record ``exc`` and say whether any attempt is left."""
        if not isinstance(exc, Exception):  # KeyboardInterrupt, CancelledError: stop at once
            return False
        self.errors.append(f"{self.tier.name}: {type(exc).__name__}")
        limit = 1 if self.tier.local else self._retries.attempts
        self._moved = not (isinstance(exc, self._retryable) and self._tier_attempts < limit)
        if self._moved:
            self._index += 1
            self._tier_attempts = 0
        return self._index < len(self.tiers)

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff with jitter between retries of one tier; none before a fallback."""
        if self._moved:
            return 0.0
        b = self._retries.backoff
        delay = min(b.initial_s * b.exp_base ** (self._tier_attempts - 1), b.max_s)
        return delay + random.uniform(0.0, b.jitter_s) if delay > 0 else 0.0

    def _retrying(self) -> dict[str, Any]:
        return {"retry": retry_if_exception(self._again), "wait": self._wait, "reraise": True}

    def _exhausted(self, exc: Exception) -> RoutingError:
        if self._index >= len(self.tiers):
            self._index = len(self.tiers) - 1  # report the last tier tried
        tried = "; ".join(self.errors) or f"{self.tier.name}: {type(exc).__name__}"
        return RoutingError(self._redactor.redact(f"every tier failed ({self.attempts} attempts): {tried}"))

    def _once(self) -> Any:
        return litellm.completion(**self.kwargs())

    async def _aonce(self) -> Any:
        return await litellm.acompletion(**self.kwargs())

    def call(self) -> Any:
        """Run the plan with ``litellm.completion``; raises :class:`RoutingError` when all fail."""
        try:
            return Retrying(**self._retrying())(self._once)
        except Exception as exc:
            raise self._exhausted(exc) from exc

    async def acall(self) -> Any:
        """Run the plan with ``litellm.acompletion``; raises :class:`RoutingError` when all fail."""
        try:
            return await AsyncRetrying(**self._retrying())(self._aonce)
        except Exception as exc:
            raise self._exhausted(exc) from exc
