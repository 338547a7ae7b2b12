"""A router's view of ``introroute serve``: a torch-free :class:`~introroute.scoring.Scorer` over HTTP.

Why its own gatekeeping step: the in-process gatekeeper runs on one worker thread because one model
must not run twice at once, and that worker would serialise remote calls too. A remote scorer is
safe to call from every request at once (the server batches what arrives together), so
:class:`RemoteGatekeeping` calls it directly and never starts the micro-batcher's worker.

Why one async implementation for both paths: httpx timeouts are per network operation, so a
server that drips its answer a byte at a time never trips them, and a sync call took 12x its
budget. ``asyncio.wait_for`` bounds the whole call (connect, send, every read); the sync API runs
the same coroutine on a private event-loop thread, started on its first sync call, and waits for
it. Failures keep the router's contract: a slow, down or overloaded server sends the request to the
fail-safe tier (a 503 is load shedding, reason ``overload``), a 400 says what is wrong with it.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr

from introroute.errors import GatekeeperError, GatekeeperTimeoutError, MessagesError
from introroute.router.availability import Unavailable
from introroute.router.batching import Batched
from introroute.router.gatekeeping import Gatekeeping, Scoring
from introroute.scoring import Messages, Scorer

#: Without a configured ``timeout_ms``: long enough for a cold batch, short enough to fail over.
DEFAULT_TIMEOUT_S = 5.0

T = TypeVar("T")


class GatekeeperOverloadedError(GatekeeperError):
    """The server shed the request (503): it is healthy but busy; the router counts it as ``overload``."""


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    if loop.is_running():
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5.0)


class RemoteScorer:
    """Scores through ``POST {url}/score``; ``targets`` from ``GET {url}/health`` (asked once).

    ``timeout_s`` bounds each call as a whole; ``api_key`` is sent as ``Authorization: Bearer``;
    ``transport`` is httpx's (a mock or a proxy transport; default: plain TCP).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float | None = None,
        api_key: str | SecretStr | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._transport = transport
        self.timeout_s = timeout_s or DEFAULT_TIMEOUT_S
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._targets: list[str] | None = None
        self._lock = threading.Lock()
        self._async_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # the sync API's, started on first use
        self._loop_lock = threading.Lock()

    @property
    def targets(self) -> list[str]:
        with self._lock:
            if self._targets is None:
                health = self._blocking(self._call("GET", "/health"))
                self._targets = list(health["targets"])
            return list(self._targets)

    def scores(self, messages: Messages) -> dict[str, float]:
        """One probability per target; raises :class:`MessagesError` on a 400, else GatekeeperError."""
        return self._blocking(self.ascores(messages))

    async def ascores(self, messages: Messages) -> dict[str, float]:
        """:meth:`scores` on the running event loop (one connection pool per loop)."""
        body = await self._call("POST", "/score", {"messages": list(messages)})
        return dict(body["scores"])

    async def _call(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        """One request within ``timeout_s`` overall, its answer checked."""
        client = self._async_client()
        request = client.request(method, f"{self.url}{path}", json=payload, headers=self._headers)
        try:
            response = await asyncio.wait_for(request, self.timeout_s)
        except (TimeoutError, asyncio.TimeoutError, httpx.TimeoutException):
            raise GatekeeperTimeoutError(
                f"gatekeeper server {self.url} gave no answer within {self.timeout_s:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise GatekeeperError(f"gatekeeper server {self.url} unreachable: {type(exc).__name__}") from None
        return self._checked(response)

    def _blocking(self, call: Coroutine[Any, Any, T]) -> T:
        """Run ``call`` on this scorer's event-loop thread and wait (the call bounds itself)."""
        return asyncio.run_coroutine_threadsafe(call, self._sync_loop()).result()

    def _sync_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="introroute-remote", daemon=True)
                thread.start()
                weakref.finalize(self, _stop_loop, loop, thread)
                self._loop = loop
            return self._loop

    def _async_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            for old in [other for other in self._async_clients if other.is_closed()]:
                del self._async_clients[old]  # a finished asyncio.run(): its pool is unusable
            # Per-operation timeouts as a backstop; the overall deadline is _call's wait_for.
            client = httpx.AsyncClient(timeout=self.timeout_s, transport=self._transport)
            self._async_clients[loop] = client
        return client

    def _checked(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = {}
        message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        if response.status_code == 400:
            raise MessagesError(message or "the gatekeeper server rejected the request")
        reason = message or response.reason_phrase
        if response.status_code == 503:
            raise GatekeeperOverloadedError(f"gatekeeper server {self.url} shed the request: {reason}")
        if response.status_code != 200 or not isinstance(body, dict):
            raise GatekeeperError(f"gatekeeper server {self.url} answered {response.status_code}: {reason}")
        return body

    def close(self) -> None:
        """Stop the sync API's event-loop thread (async pools are dropped with their loops)."""
        loop, self._loop = self._loop, None
        if loop is not None:
            client = self._async_clients.pop(loop, None)
            if client is not None:
                asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=5.0)
            loop.call_soon_threadsafe(loop.stop)

    def __repr__(self) -> str:
        return f"RemoteScorer({self.url!r}, timeout_s={self.timeout_s:g})"


class RemoteGatekeeping(Gatekeeping):
    """:class:`Gatekeeping` without the micro-batcher: every request calls the remote scorer at
    once (the server batches concurrent requests itself); scores are validated and counted alike.

    ``owns_scorer``: the router built the scorer from its config, so :meth:`close` closes it too
    (its sync loop thread and connection pools); a scorer the caller passed in stays theirs.
    """

    def __init__(self, *args: Any, owns_scorer: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owns_scorer = owns_scorer

    def close(self) -> None:
        super().close()
        if self.owns_scorer and self._loader.state == "ready":
            close = getattr(self._loader.get(), "close", None)
            if callable(close):
                close()

    def score(self, messages: Messages) -> Scoring:
        start = time.perf_counter()
        try:
            scorer = self.gatekeeper()
            return self._outcome(Batched(Scoring(scores=scorer.scores(messages)), 0.0, 1), start)
        except Exception as exc:
            return self._outcome(self._remote_error(exc), start)

    async def ascore(self, messages: Messages) -> Scoring:
        start = time.perf_counter()
        try:
            scorer: Scorer = self.gatekeeper()  # a RemoteScorer builds instantly: no thread hop
            scores = await asyncio.wait_for(scorer.ascores(messages), self.timeout_s)  # type: ignore[attr-defined]
            return self._outcome(Batched(Scoring(scores=scores), 0.0, 1), start)
        except Exception as exc:
            return self._outcome(self._remote_error(exc), start)

    def _remote_error(self, exc: Exception) -> Exception:
        if isinstance(exc, GatekeeperOverloadedError):
            return Unavailable("overload", str(exc))  # shed by the server: counted as load, not failure
        if isinstance(exc, GatekeeperTimeoutError) and self.timeout_s is not None:
            return TimeoutError()  # reported like an in-process scorer over its budget
        return exc
