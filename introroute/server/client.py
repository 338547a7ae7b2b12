"""A router's view of ``introroute serve``: a torch-free :class:`~introroute.scoring.Scorer` over HTTP.

Why its own gatekeeping step: the in-process gatekeeper runs on one worker thread because one model
must not run twice at once, and that worker would serialise remote calls too. A remote scorer is
safe to call from every request at once (the server batches what arrives together), so
:class:`RemoteGatekeeping` calls it directly, on the caller's thread or, async, on the event loop;
the time budget is the HTTP timeout. Failures keep the router's contract: a slow, down or
overloaded server sends the request to the fail-safe tier, a 400 says what is wrong with it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx

from introroute.errors import GatekeeperError, GatekeeperTimeoutError, MessagesError
from introroute.router.batching import Batched
from introroute.router.gatekeeping import Gatekeeping, Scoring
from introroute.scoring import Messages, Scorer

#: Without a configured ``timeout_ms``: long enough for a cold batch, short enough to fail over.
DEFAULT_TIMEOUT_S = 5.0


class RemoteScorer:
    """Scores through ``POST {url}/score``; ``targets`` from ``GET {url}/health`` (asked once)."""

    def __init__(self, url: str, *, timeout_s: float | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s or DEFAULT_TIMEOUT_S
        self._targets: list[str] | None = None
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=self.timeout_s)
        self._async_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}

    @property
    def targets(self) -> list[str]:
        with self._lock:
            if self._targets is None:
                health = self._checked(self._send(lambda: self._client.get(f"{self.url}/health")))
                self._targets = list(health["targets"])
            return list(self._targets)

    def scores(self, messages: Messages) -> dict[str, float]:
        """One probability per target; raises :class:`MessagesError` on a 400, else GatekeeperError."""
        payload = {"messages": list(messages)}
        response = self._send(lambda: self._client.post(f"{self.url}/score", json=payload))
        return dict(self._checked(response)["scores"])

    async def ascores(self, messages: Messages) -> dict[str, float]:
        """:meth:`scores` on the running event loop (one connection pool per loop)."""
        client = self._async_client()
        payload = {"messages": list(messages)}
        try:
            response = await client.post(f"{self.url}/score", json=payload)
        except httpx.TimeoutException as exc:
            raise self._timeout() from exc
        except httpx.HTTPError as exc:
            raise GatekeeperError(f"gatekeeper server {self.url} unreachable: {type(exc).__name__}") from exc
        return dict(self._checked(response)["scores"])

    def _async_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            for old in [other for other in self._async_clients if other.is_closed()]:
                del self._async_clients[old]  # a finished asyncio.run(): its pool is unusable
            client = self._async_clients[loop] = httpx.AsyncClient(timeout=self.timeout_s)
        return client

    def _send(self, call: Any) -> httpx.Response:
        try:
            return call()
        except httpx.TimeoutException as exc:
            raise self._timeout() from exc
        except httpx.HTTPError as exc:
            raise GatekeeperError(f"gatekeeper server {self.url} unreachable: {type(exc).__name__}") from exc

    def _timeout(self) -> GatekeeperTimeoutError:
        return GatekeeperTimeoutError(
            f"gatekeeper server {self.url} gave no answer within {self.timeout_s:g} s"
        )

    def _checked(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = {}
        message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        if response.status_code == 400:
            raise MessagesError(message or "the gatekeeper server rejected the request")
        if response.status_code != 200 or not isinstance(body, dict):
            reason = message or response.reason_phrase
            raise GatekeeperError(f"gatekeeper server {self.url} answered {response.status_code}: {reason}")
        return body

    def close(self) -> None:
        """Close the connection pools (sync now; async ones are dropped with their loops)."""
        self._client.close()

    def __repr__(self) -> str:
        return f"RemoteScorer({self.url!r}, timeout_s={self.timeout_s:g})"


class RemoteGatekeeping(Gatekeeping):
    """:class:`Gatekeeping` without the micro-batcher: every request calls the remote scorer at
    once (the server batches concurrent requests itself); scores are validated and counted alike."""

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
        if isinstance(exc, GatekeeperTimeoutError) and self.timeout_s is not None:
            return TimeoutError()  # reported like an in-process scorer over its budget
        return exc
