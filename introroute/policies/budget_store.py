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

Why the cap survives store switches: each process keeps its own recent decisions, whichever store
took them. The local fallback decides on that window (so the decisions it just took through Redis
count), the decisions taken locally are appended to the Redis window in the same script call as
the next shared decision (so they count there too), and a Redis window that vanished (flushed, or
a restart without persistence) is restored from it instead of starting over from the initial
``tau``. A step that misses its deadline (Redis paused, the client gave up) is refused inside the
script, so Redis never records a decision the router did not act on.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from introroute.errors import PolicyError

logger = logging.getLogger(__name__)
# Query parameters of a store URL that carry a credential (redis-py reads ``password`` there).
_SECRET_QUERY_KEY = re.compile(r"(?i)pass|secret|token|auth|key")


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

    def record(self, p: float, went_up: bool) -> None:
        """Append a decision taken elsewhere (by the shared window) without deciding."""
        with self._lock:
            self._scores.append(p)
            self._went_up.append(went_up)
            self._seq += 1

    def entries(self) -> list[tuple[float, bool]]:
        """The recent (score, went-up) pairs, oldest first (the oldest score's flag has left the window)."""
        with self._lock:
            scores, flags = list(self._scores), list(self._went_up)
        return list(zip(scores, [False] * (len(scores) - len(flags)) + flags, strict=True))

    def describe(self) -> dict[str, Any]:
        return {"backend": "memory"}


# KEYS: scores (sorted set: member = decision seq, score = p), went-up flags (list), sequence
# counter, count of "1" flags. ARGV: p (repr), target_share, window, initial tau, warmup, limit,
# deadline (Redis clock, microseconds), 1 if the window existed before (so a missing one was lost),
# then (p, flag) pairs decided elsewhere to append first. Mirrors WindowSpec.quantile and
# MemoryWindow.step: the sorted set gives the quantile by rank in O(log window), the oldest score
# leaves by its seq. A step past its deadline writes nothing: the client gave up on it and decided
# locally. Floats go back as %.17g strings because Redis truncates Lua numbers to integers in replies.
_STEP_LUA = """
local share = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local tau = tonumber(ARGV[4])
local warmup = tonumber(ARGV[5])
local limit = tonumber(ARGV[6])
local clock = redis.call('TIME')
local now = string.format('%.17g', tonumber(clock[1]) * 1000000 + tonumber(clock[2]))
if tonumber(now) > tonumber(ARGV[7]) then return {'expired', now} end
if ARGV[8] == '1' and redis.call('EXISTS', KEYS[3]) == 0 then return {'lost', now} end
local ups = tonumber(redis.call('GET', KEYS[4]) or '0')
local function push(p, up)
  local seq = redis.call('INCR', KEYS[3])
  redis.call('ZADD', KEYS[1], p, tostring(seq))
  if seq > window then redis.call('ZREM', KEYS[1], tostring(seq - window)) end
  if window > 1 then
    redis.call('RPUSH', KEYS[2], up and '1' or '0')
    if up then ups = ups + 1 end
    if redis.call('LLEN', KEYS[2]) > window - 1 then
      if redis.call('LPOP', KEYS[2]) == '1' then ups = ups - 1 end
    end
  end
  return seq
end
for i = 9, #ARGV, 2 do push(ARGV[i], ARGV[i + 1] == '1') end
local n = redis.call('ZCARD', KEYS[1])
if n >= math.max(warmup, 1) then
  local k = math.min(math.floor(share * n), n - 1)
  tau = tonumber(redis.call('ZRANGE', KEYS[1], k, k, 'WITHSCORES')[2])
end
local wants_up = tonumber(ARGV[1]) < tau
local capped = wants_up and (ups + 1 > limit)
local went_up = wants_up and not capped
local seq = push(ARGV[1], went_up)
local kept = 0
if window > 1 then
  redis.call('SET', KEYS[4], ups)
  kept = redis.call('LLEN', KEYS[2])
end
local ratio = 0
if kept > 0 then ratio = ups / kept end
return {'ok', now, string.format('%.17g', tau), capped and 1 or 0, went_up and 1 or 0,
        string.format('%.17g', ratio), seq}
"""


def _masked(url: str) -> str:
    """``url`` without its password, in the userinfo or the query (``?password=``): decisions, reprs and
    logs record the store, never its credentials."""
    parts = urlsplit(url)
    if parts.password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        parts = parts._replace(netloc=f"{user}:***@{host}" + (f":{parts.port}" if parts.port else ""))
    query = [
        (k, "***" if _SECRET_QUERY_KEY.search(k) else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


class RedisWindow:
    """The window in Redis under ``introroute:budget:{key}:*``, shared by every router using ``key``.

    ``timeout_ms`` bounds each Redis call: the decision is on the request's critical path (and,
    since policies are synchronous, on the event loop of an async caller such as the proxy; one
    round trip to a nearby Redis is well under a millisecond). After a failure the local fallback
    window decides for ``retry_s`` before Redis is tried again. Decisions of one process are taken
    one at a time (a lock around the step) so that its own window records them in the order taken.

    A step must start on the Redis server within half of ``timeout_ms`` of being sent, on the
    server's clock (the offset to it is learnt from every reply), or the script refuses it: a step
    the client timed out on never commits later, and the other half leaves the reply time to arrive.
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
            from redis.backoff import NoBackoff
            from redis.retry import Retry
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
        self._start_within_us = timeout_ms * 500.0
        try:  # from_url only parses: no connection until the first decision; a step is never resent
            self._client = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
            )
        except ValueError as exc:
            raise PolicyError(f"store.url: {exc}") from None
        self._script = self._client.register_script(_STEP_LUA)
        prefix = f"introroute:budget:{{{key}}}"  # one hash slot: the script touches all four keys
        self._keys = [f"{prefix}:scores", f"{prefix}:went_up", f"{prefix}:seq", f"{prefix}:ups"]
        self._own = MemoryWindow(spec)  # this process's recent decisions, whichever store took them
        # decided locally while Redis was unavailable, not yet in Redis (only the last window count)
        self._pending: deque[tuple[float, bool]] = deque(maxlen=spec.window)
        self._offset_us: float | None = None  # a lower bound of (Redis clock - time.monotonic()), in µs
        self._seen = False  # the shared window existed at our last step: a missing one was lost
        self._down_until = 0.0
        self._up = True  # no outage warned about yet
        self._lock = threading.Lock()

    def step(self, p: float) -> Step:
        with self._lock:
            if time.monotonic() >= self._down_until:
                try:
                    shared = self._shared_step(float(p))
                except self._errors as exc:
                    self._unavailable(exc)
                else:
                    if shared is not None:
                        self._own.record(p, shared.went_up)
                        return shared
            local = self._own.step(p, store="memory (redis unavailable)")
            self._pending.append((p, local.went_up))
            return local

    def _shared_step(self, p: float) -> Step | None:
        """The step in Redis, carrying the local decisions first; ``None``: too late, decide locally."""
        if self._offset_us is None:
            seconds, micros = self._client.time()
            self._learn_offset(seconds * 1e6 + micros)
        carry, expect = list(self._pending), self._seen
        spec = self.spec
        while True:
            deadline = time.monotonic() * 1e6 + self._offset_us + self._start_within_us
            args = [repr(p), spec.target_share, spec.window, spec.tau, spec.warmup, spec.limit]
            args += [f"{deadline:.0f}", int(expect)]
            args += [x for q, up in carry for x in (repr(q), int(up))]
            status, now, *rest = self._script(keys=self._keys, args=args)
            self._learn_offset(float(now))
            status = status.decode() if isinstance(status, bytes) else status  # decode_responses in the URL
            if status == "expired":
                return None
            if status != "lost":
                break
            carry, expect = self._own.entries(), False
            logger.warning(
                "budget policy: the window in redis %s vanished (flushed or restarted); "
                "restoring it from this process's last %d decisions",
                _masked(self.url),
                len(carry),
            )
        self._pending.clear()
        self._seen = self._up = True
        tau, capped, went_up, share, seq = rest
        return Step(
            tau=float(tau),
            capped=bool(capped),
            went_up=bool(went_up),
            share=float(share),
            store="redis",
            seq=int(seq),
        )

    def _learn_offset(self, redis_now_us: float) -> None:
        """Tighten the lower bound of the clock offset with a Redis timestamp just received."""
        estimate = redis_now_us - time.monotonic() * 1e6  # the reply took time: never above the truth
        self._offset_us = estimate if self._offset_us is None else max(self._offset_us, estimate)

    def _unavailable(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self.retry_s
        self._offset_us = None  # the Redis that answers next may be another machine: learn its clock anew
        if self._up:  # one warning per outage, however often it is retried
            self._up = False
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
            return self._own.current_tau()
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
