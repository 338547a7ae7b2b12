"""Where the ``budget`` policy keeps its sliding window: this process's memory, or Redis.

Why Redis: a LiteLLM Proxy scales out as several processes, each with its own router. With
per-process windows each replica adapts ``tau`` to its own slice of the traffic, and the cap
("at most ``floor(target_share * window)`` of any ``window`` consecutive decisions go up") holds per
replica but not for the deployment. Redis is the store LiteLLM's own router already uses for shared
state (rate limits, cooldowns), so a deployment that scales out has one.

Why a Lua script: the step "read the window -> quantile -> cap check -> append" must be atomic
across replicas, or two routers would both see room under the cap and both send a request up.
Redis runs a script without interleaving other commands, so the shared window behaves exactly like
one in-memory window fed the decisions in the order Redis served them (``seq``, tested).

If Redis is unreachable the policy keeps deciding on a local window (the cap then holds per
replica, which still bounds the deployment's share) and retries Redis after ``retry_s``: a cache
outage must neither stop routing nor send everything to the expensive tier.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from introroute.errors import PolicyError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowSpec:
    """The budget policy's parameters, as the stores need them."""

    target_share: float
    window: int
    tau: float
    warmup: int

    @property
    def limit(self) -> int:
        """Expensive-tier decisions allowed in any ``window`` consecutive ones."""
        return math.floor(self.target_share * self.window + 1e-9)

    def quantile(self, scores: list[float]) -> float:
        """``tau`` for these recent scores: the initial one until ``warmup``, then the share quantile."""
        if len(scores) < max(self.warmup, 1):
            return self.tau
        ranked = sorted(scores)
        # At most floor(share * n) of the recent scores lie strictly below ranked[k].
        k = min(math.floor(self.target_share * len(ranked)), len(ranked) - 1)
        return ranked[k]


@dataclass(frozen=True)
class Step:
    """One decision's numbers: the threshold used, whether the cap stopped it, the share after it."""

    tau: float
    capped: bool
    went_up: bool
    share: float
    store: str
    seq: int | None = None


class BudgetWindow(Protocol):
    """A sliding window of (score, went-up) pairs with an atomic decide-and-append step."""

    def step(self, p: float) -> Step:
        """Decide for cheap-tier probability ``p`` and record the decision, atomically."""
        ...

    def current_tau(self) -> float:
        """The threshold the next decision would use."""
        ...

    def describe(self) -> dict[str, Any]:
        """The store as the decision records it (no secrets)."""
        ...


class MemoryWindow:
    """The window in this process (the default): exact, lock-protected, lost on restart."""

    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec
        self._scores: deque[float] = deque(maxlen=spec.window)
        self._went_up: deque[bool] = deque(maxlen=spec.window - 1)
        self._seq = 0
        self._lock = threading.Lock()

    def current_tau(self) -> float:
        with self._lock:
            return self.spec.quantile(list(self._scores))

    def step(self, p: float, store: str = "memory") -> Step:
        with self._lock:
            tau = self.spec.quantile(list(self._scores))
            wants_up = p < tau
            capped = wants_up and sum(self._went_up) + 1 > self.spec.limit
            went_up = wants_up and not capped
            self._scores.append(p)
            self._went_up.append(went_up)
            share = sum(self._went_up) / len(self._went_up) if self._went_up else 0.0
            self._seq += 1
            return Step(tau=tau, capped=capped, went_up=went_up, share=share, store=store, seq=self._seq)

    def describe(self) -> dict[str, Any]:
        return {"backend": "memory"}


# KEYS: scores (sorted set: member = decision seq, score = p), went-up flags (list), sequence
# counter, count of "1" flags. ARGV: p (repr), target_share, window, initial tau, warmup, limit.
# Mirrors WindowSpec.quantile and MemoryWindow.step: the sorted set gives the quantile by rank in
# O(log window), the oldest score leaves by its seq. Floats go back as %.17g strings because Redis
# truncates Lua numbers to integers in replies.
_STEP_LUA = """
local share = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local tau = tonumber(ARGV[4])
local warmup = tonumber(ARGV[5])
local limit = tonumber(ARGV[6])
local n = redis.call('ZCARD', KEYS[1])
if n >= math.max(warmup, 1) then
  local k = math.min(math.floor(share * n), n - 1)
  tau = tonumber(redis.call('ZRANGE', KEYS[1], k, k, 'WITHSCORES')[2])
end
local ups = tonumber(redis.call('GET', KEYS[4]) or '0')
local wants_up = tonumber(ARGV[1]) < tau
local capped = wants_up and (ups + 1 > limit)
local went_up = wants_up and not capped
local seq = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[1], ARGV[1], tostring(seq))
if seq > window then redis.call('ZREM', KEYS[1], tostring(seq - window)) end
local kept = 0
if window > 1 then
  redis.call('RPUSH', KEYS[2], went_up and '1' or '0')
  if went_up then ups = ups + 1 end
  kept = redis.call('LLEN', KEYS[2])
  if kept > window - 1 then
    if redis.call('LPOP', KEYS[2]) == '1' then ups = ups - 1 end
    kept = kept - 1
  end
  redis.call('SET', KEYS[4], ups)
end
local ratio = 0
if kept > 0 then ratio = ups / kept end
return {string.format('%.17g', tau), capped and 1 or 0, went_up and 1 or 0,
        string.format('%.17g', ratio), seq}
"""


def _masked(url: str) -> str:
    """``url`` without its password (decisions and logs record the store, never its credentials)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisWindow:
    """The window in Redis under ``introroute:budget:{key}:*``, shared by every router using ``key``.

    ``timeout_ms`` bounds each Redis call: the decision is on the request's critical path (and,
    since policies are synchronous, on the event loop of an async caller such as the proxy; one
    round trip to a nearby Redis is well under a millisecond). After a failure the local fallback
    window decides for ``retry_s`` before Redis is tried again.
    """

    def __init__(
        self,
        spec: WindowSpec,
        *,
        url: str,
        key: str = "default",
        timeout_ms: float = 100.0,
        retry_s: float = 5.0,
    ) -> None:
        try:
            import redis
        except ImportError as exc:
            raise PolicyError(
                "the budget policy's redis store needs the redis package: pip install redis"
            ) from exc
        self.spec = spec
        self.url = url
        self.key = key
        self.retry_s = retry_s
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        timeout = timeout_ms / 1000.0
        try:  # from_url only parses: no connection until the first decision
            self._client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        except ValueError as exc:
            raise PolicyError(f"store.url: {exc}") from None
        self._script = self._client.register_script(_STEP_LUA)
        prefix = f"introroute:budget:{{{key}}}"  # one hash slot: the script touches all four keys
        self._keys = [f"{prefix}:scores", f"{prefix}:went_up", f"{prefix}:seq", f"{prefix}:ups"]
        self._local = MemoryWindow(spec)
        self._down_until = 0.0
        self._lock = threading.Lock()

    def step(self, p: float) -> Step:
        if time.monotonic() >= self._down_until:
            spec = self.spec
            args = [repr(float(p)), spec.target_share, spec.window, spec.tau, spec.warmup, spec.limit]
            try:
                tau, capped, went_up, share, seq = self._script(keys=self._keys, args=args)
            except self._errors as exc:
                self._unavailable(exc)
            else:
                return Step(
                    tau=float(tau),
                    capped=bool(capped),
                    went_up=bool(went_up),
                    share=float(share),
                    store="redis",
                    seq=int(seq),
                )
        return self._local.step(p, store="memory (redis unavailable)")

    def _unavailable(self, exc: BaseException) -> None:
        with self._lock:
            first = self._down_until == 0.0 or time.monotonic() >= self._down_until
            self._down_until = time.monotonic() + self.retry_s
        if first:
            logger.warning(
                "budget policy: redis %s unavailable (%s); deciding on this process's window for %.0f s",
                _masked(self.url),
                type(exc).__name__,
                self.retry_s,
            )

    def current_tau(self) -> float:
        try:
            scores = [score for _, score in self._client.zrange(self._keys[0], 0, -1, withscores=True)]
        except self._errors:
            return self._local.current_tau()
        return self.spec.quantile(scores)

    def describe(self) -> dict[str, Any]:
        return {"backend": "redis", "url": _masked(self.url), "key": self.key}


def make_window(spec: WindowSpec, store: str | Mapping[str, Any] | None) -> BudgetWindow:
    """The window a YAML ``store`` asks for: ``None``/``memory``, or ``{backend: redis, url, key, ...}``."""
    if store is None or store == "memory":
        return MemoryWindow(spec)
    if not isinstance(store, Mapping):
        raise PolicyError(f"store must be 'memory' or a mapping with backend: redis, got {store!r}")
    options = dict(store)
    backend = options.pop("backend", "memory")
    if backend == "memory" and not options:
        return MemoryWindow(spec)
    if backend != "redis":
        raise PolicyError(f"store.backend must be 'memory' or 'redis', got {backend!r}")
    unknown = sorted(set(options) - {"url", "key", "timeout_ms", "retry_s"})
    if unknown:
        raise PolicyError(f"store: unknown key(s) {unknown}; expected url, key, timeout_ms, retry_s")
    if not isinstance(options.get("url"), str):
        raise PolicyError("store.url: required for backend redis (e.g. redis://127.0.0.1:6379/0)")
    try:
        return RedisWindow(spec, **options)
    except TypeError as exc:
        raise PolicyError(f"store: {exc}") from None
