"""Send the request to the chosen tier through LiteLLM, with retries and then fallbacks.

Why one tenacity loop over all tiers: retrying a tier and falling back to the next are the same
act ("try again, maybe elsewhere"), so :class:`Attempts` decides after each failure whether the
next attempt goes to the same tier (a retryable error, attempts left: back off first) or to the
next tier in the fallback order (anything else: immediately). Tenacity then runs that plan
unchanged for ``litellm.completion`` and ``litellm.acompletion``. The local tier is in-process and
deterministic, so it gets one attempt. A stream's first chunk is read within the attempt, so a
stream that fails before any token is a failed attempt like any other; errors after it are not
retried: tokens already went out.

What is retried on the same tier: the configured error classes, except a 4xx other than 408,
409 and 429 (the same request will be refused again) and a failure to encode the request on this
side (a lone surrogate, an object JSON cannot hold), which LiteLLM reports as a retryable
``InternalServerError``. A ``Retry-After`` (or ``retry-after-ms``) header is honoured: the next
attempt waits at least that long, and a wait longer than ``backoff.retry_after_max_s`` goes to
the fallbacks instead of sleeping.

When every tier failed, :class:`RoutingError` chains a redacted :class:`ProviderError` copy of the
last provider error, never the error itself: provider errors echo credentials.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import math
import random
from collections.abc import Callable
from typing import Any

import litellm
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception

from introroute.errors import ProviderError, RoutingError
from introroute.router.config import RetryConfig, TierConfig
from introroute.router.decision import aread_ahead, read_ahead
from introroute.router.secrets import Redactor, divert_verbose_prints

# 4xx statuses worth retrying (as the OpenAI SDK does): timeout, conflict, rate limit.
RETRYABLE_4XX = frozenset({408, 409, 429})


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
        self._retry_after: float | None = None
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
        self._retry_after = retry_after_s(exc)
        cap = self._retries.backoff.retry_after_max_s
        too_long = self._retry_after is not None and self._retry_after > cap
        self._moved = not (self._retryable_error(exc) and self._tier_attempts < limit and not too_long)
        if self._moved:
            self._index += 1
            self._tier_attempts = 0
        return self._index < len(self.tiers)

    def _retryable_error(self, exc: BaseException) -> bool:
        if not isinstance(exc, self._retryable):
            return False
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500 and status not in RETRYABLE_4XX:
            return False
        return not local_encoding_error(exc)

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff with jitter between retries of one tier, at least any Retry-After;
        none before a fallback."""
        if self._moved:
            return 0.0
        b = self._retries.backoff
        delay = min(b.initial_s * b.exp_base ** (self._tier_attempts - 1), b.max_s)
        delay = delay + random.uniform(0.0, b.jitter_s) if delay > 0 else 0.0
        return max(delay, self._retry_after or 0.0)

    def _retrying(self) -> dict[str, Any]:
        return {"retry": retry_if_exception(self._again), "wait": self._wait, "reraise": True}

    def _exhausted(self, exc: Exception) -> RoutingError:
        """The caller's error: redacted, chaining a redacted copy of ``exc`` (never ``exc`` itself)."""
        if self._index >= len(self.tiers):
            self._index = len(self.tiers) - 1  # report the last tier tried
        tried = "; ".join(self.errors) or f"{self.tier.name}: {type(exc).__name__}"
        error = RoutingError(self._redactor.redact(f"every tier failed ({self.attempts} attempts): {tried}"))
        status = getattr(exc, "status_code", None)
        error.__cause__ = ProviderError(
            self._redactor.redact(f"{self.tier.name}: {_qualified(type(exc))}: {exc}"),
            tier=self.tier.name,
            error_type=type(exc).__name__,
            status_code=status if isinstance(status, int) else None,
        )
        error.__suppress_context__ = True
        return error

    # A stream's first chunk is read inside the attempt (see ``read_ahead``): a stream that
    # fails before any token is retried or falls back like any failed call.
    def _once(self) -> Any:
        divert_verbose_prints()
        return read_ahead(litellm.completion(**self.kwargs()))

    async def _aonce(self) -> Any:
        divert_verbose_prints()
        return await aread_ahead(await litellm.acompletion(**self.kwargs()))

    # Raised outside the ``except`` block, so the provider error is not even the implicit
    # ``__context__`` of the RoutingError.
    def call(self) -> Any:
        """Run the plan with ``litellm.completion``; raises :class:`RoutingError` when all fail."""
        try:
            return Retrying(**self._retrying())(self._once)
        except Exception as exc:
            error = self._exhausted(exc)
        raise error

    async def acall(self) -> Any:
        """Run the plan with ``litellm.acompletion``; raises :class:`RoutingError` when all fail."""
        try:
            return await AsyncRetrying(**self._retrying())(self._aonce)
        except Exception as exc:
            error = self._exhausted(exc)
        raise error


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it was raised from or during (cycle-safe, bounded)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 32 and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def local_encoding_error(exc: BaseException) -> bool:
    """Whether ``exc`` is this side failing to encode the request, not the provider failing.

    LiteLLM reports a lone surrogate in a message or an object ``json`` cannot serialise as an
    ``InternalServerError``; retrying sends the same bytes that could not be built.
    """
    for link in _chain(exc):
        if isinstance(link, UnicodeEncodeError | TypeError):
            return True
        # NaN/inf in a body encoded with allow_nan=False (not a malformed *response*)
        if (
            isinstance(link, ValueError)
            and not isinstance(link, json.JSONDecodeError)
            and ("JSON compliant" in str(link))
        ):
            return True
    return False


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds the provider asked to wait (``retry-after-ms`` or ``Retry-After``), if it said."""
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        millis = headers.get("retry-after-ms")
        value = headers.get("retry-after")
    except Exception:
        return None
    if millis is not None:
        seconds = _number(millis)
        return seconds / 1000.0 if seconds is not None else None
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:  # an HTTP date
        when = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


def _number(text: Any) -> float | None:
    try:
        value = float(str(text).strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None
