"""The gatekeeper's HTTP API (FastAPI): ``POST /score``, ``GET /health``, ``GET /metrics``.

Why these three: ``/score`` is all a router needs; ``/health`` answers only once the model is
loaded (``introroute serve`` loads it before listening), so an orchestrator's readiness probe and a
router's first request never wait on a cold model; ``/metrics`` shows whether batching happens
(mean batch size), whether load is shed, and what a score costs, in Prometheus text or JSON.

Scoring is the router's own :class:`~introroute.router.gatekeeping.Gatekeeping` (one
micro-batcher, one set of :class:`~introroute.router.gatekeeping.BatchingOptions`, one stats
vocabulary), awaited per request. Each request is validated and tokenised on its own before it
joins a batch, so a request the model cannot read gets its own 400 and never fails the requests
batched with it.

The service holds against any client (:class:`ServeOptions`): bodies over ``max_body_bytes`` get a
413 before they are read in full, too many messages or characters a 400 before any tokenisation,
a connection that does not deliver its whole request within ``request_timeout_s`` is closed
(:mod:`introroute.server.http`), a 500 never carries internal exception text (it is logged), and
with ``api_key`` set ``/score`` and ``/metrics`` want ``Authorization: Bearer <key>`` (checked
before the body is read); ``/health`` stays open for probes.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
import warnings
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from introroute.errors import MessagesError
from introroute.messages import normalize_messages
from introroute.router.gatekeeping import SHED_REASONS, BatchingOptions, Gatekeeping, Scoring
from introroute.scoring import Scorer
from introroute.server.options import ServeOptions

logger = logging.getLogger(__name__)

#: Paths that need the API key when one is set (``/health`` stays open for readiness probes).
PROTECTED_PATHS = ("/score", "/metrics")


class ScoreRequest(BaseModel):
    """``messages`` in OpenAI chat format; ``targets``: a subset of the gatekeeper's (default: all)."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Any]
    targets: list[str] | None = Field(default=None, min_length=1)


class ScoreResponse(BaseModel):
    """P(success) per target, and the batch this request was scored in."""

    scores: dict[str, float]
    batch_size: int
    queue_ms: float
    forward_ms: float


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status, headers=headers)


class BearerAuth:
    """ASGI middleware: ``PROTECTED_PATHS`` need the bearer key, checked from the headers alone
    (constant-time), so an unauthenticated client cannot make the server read or parse a body."""

    def __init__(self, app: ASGIApp, *, api_key: SecretStr) -> None:
        self.app = app
        self._expected = f"Bearer {api_key.get_secret_value()}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in PROTECTED_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                response = _error(
                    401, "missing or wrong API key", "authentication_error", {"WWW-Authenticate": "Bearer"}
                )
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


class _Traffic:
    """What the HTTP layer adds to the gatekeeper's own counters: requests, 4xx rejections and
    per-request latencies (bounded windows, not all time)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.requests = 0
        self.rejected = 0
        self.max_batch_size = 0
        self.latency_ms: deque[float] = deque(maxlen=2048)
        self.forward_ms: deque[float] = deque(maxlen=2048)

    def scored(self, scoring: Scoring, forward_ms: float) -> None:
        self.max_batch_size = max(self.max_batch_size, scoring.batch_size or 0)
        self.latency_ms.append(scoring.gatekeeper_ms or 0.0)
        self.forward_ms.append(forward_ms)

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "rejected": self.rejected,
            "max_batch_size": self.max_batch_size,
            "latency_ms": _percentiles(self.latency_ms),
            "forward_ms": _percentiles(self.forward_ms),
            "uptime_s": time.time() - self.started,
        }


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None}
    ranked = sorted(values)
    return {"p50": ranked[len(ranked) // 2], "p95": ranked[min(len(ranked) - 1, int(len(ranked) * 0.95))]}


def _batching(batching: BatchingOptions | None, legacy: dict[str, Any]) -> BatchingOptions:
    """``batching``, or one built from the old ``max_batch``/``max_wait_ms``/``max_queue`` keywords."""
    unknown = sorted(set(legacy) - {"max_batch", "max_wait_ms", "max_queue"})
    if unknown:
        raise TypeError(f"create_app() got unexpected keyword arguments {unknown}")
    if not legacy:
        return batching or BatchingOptions()
    if batching is not None:
        raise TypeError("pass batching=BatchingOptions(...) or the deprecated keywords, not both")
    warnings.warn(
        "create_app(max_batch=, max_wait_ms=, max_queue=) is deprecated: pass "
        "batching=BatchingOptions(max_batch_size=, max_wait_s=, max_queue=)",
        DeprecationWarning,
        stacklevel=3,
    )
    defaults = BatchingOptions()
    return BatchingOptions(
        max_batch_size=legacy.get("max_batch", defaults.max_batch_size),
        max_wait_s=legacy["max_wait_ms"] / 1000.0 if "max_wait_ms" in legacy else defaults.max_wait_s,
        max_queue=legacy.get("max_queue", defaults.max_queue),
    )


def create_app(
    scorer: Scorer,
    *,
    batching: BatchingOptions | None = None,
    options: ServeOptions | None = None,
    **legacy: Any,
) -> FastAPI:
    """The scoring service for an already-loaded ``scorer`` (IntroLM, a baseline, a test double).

    ``legacy``: the deprecated ``max_batch``, ``max_wait_ms`` and ``max_queue`` keywords.
    """
    batching = _batching(batching, legacy)
    options = options or ServeOptions()
    # No budget: a server answers every admitted request; routers keep their own deadline. The
    # queue bound (max_queue) sheds the rest at once, as 503s.
    gatekeeping = Gatekeeping(lambda: scorer, keep_prefill=False, options=batching)
    targets = list(scorer.targets)
    traffic = _Traffic()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        gatekeeping.close()

    app = FastAPI(title="introroute gatekeeper", lifespan=lifespan)
    app.state.gatekeeping = gatekeeping
    app.state.options = options
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=options.max_body_bytes)
    if options.api_key is not None:
        app.add_middleware(BearerAuth, api_key=options.api_key)  # outermost: before any body is read

    def reject(message: str) -> JSONResponse:
        traffic.rejected += 1
        return _error(400, message, "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """FastAPI's own refusals (a body that is not JSON, nested too deeply to parse, an unknown
        path) in this API's error shape; on /score they count as requests rejected."""
        if request.url.path == "/score":
            traffic.requests += 1
            traffic.rejected += 1
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return _error(exc.status_code, str(exc.detail), kind, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        traffic.requests += 1
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return reject(problems)

    def problem(body: ScoreRequest) -> str | None:
        """What is wrong with this request on its own, checked before it can join a batch."""
        if len(body.messages) > options.max_messages:
            return f"{len(body.messages)} messages; this server takes at most {options.max_messages}"
        try:
            normalized = normalize_messages(body.messages)
        except MessagesError as exc:
            return str(exc)
        chars = sum(len(m["content"]) for m in normalized.messages)
        if chars > options.max_chars:
            return f"{chars} characters of message text; this server takes at most {options.max_chars}"
        unknown = sorted(set(body.targets or []) - set(targets))
        if unknown:
            return f"unknown targets {unknown}; this gatekeeper scores {targets}"
        return None

    @app.post("/score", response_model=ScoreResponse)
    async def score(body: ScoreRequest) -> Any:
        traffic.requests += 1
        wrong = problem(body)
        if wrong is not None:
            return reject(wrong)
        scoring = await gatekeeping.ascore(body.messages)  # encodes this request alone, then batches
        if scoring.failure is not None:
            return _failed(scoring)
        queue_ms = scoring.queue_ms or 0.0
        forward_ms = max(0.0, (scoring.gatekeeper_ms or 0.0) - queue_ms)
        traffic.scored(scoring, forward_ms)
        return ScoreResponse(
            scores={t: scoring.scores[t] for t in body.targets or targets},
            batch_size=scoring.batch_size or 1,
            queue_ms=queue_ms,
            forward_ms=forward_ms,
        )

    def _failed(scoring: Scoring) -> JSONResponse:
        if scoring.reason == "invalid_request":
            return reject(scoring.failure or "the gatekeeper cannot read these messages")
        if scoring.reason in SHED_REASONS:
            message = scoring.failure or f"gatekeeper {scoring.reason}"
            return _error(503, message, "overloaded", {"Retry-After": "1"})
        # The reason code is safe to send; the failure text may hold internals: it goes to the log.
        logger.error("introroute serve: scoring failed (%s): %s", scoring.reason, scoring.failure)
        return _error(500, f"gatekeeper error ({scoring.reason}); see the server log", "server_error")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "targets": targets,
            "trained": getattr(scorer, "trained", None),
            "max_batch_size": batching.max_batch_size,
            "max_batch": batching.max_batch_size,  # deprecated name of max_batch_size
            "max_wait_ms": batching.max_wait_s * 1000.0,
        }

    @app.get("/metrics", response_model=None)
    async def metrics(format: str = "prometheus") -> Any:
        snapshot = {**gatekeeping.stats(), **traffic.snapshot()}
        if format == "json":
            return snapshot
        return PlainTextResponse(_prometheus(snapshot), media_type="text/plain; version=0.0.4")

    return app


def _number(value: Any) -> str:
    return "NaN" if value is None else str(value)


def _prometheus(snapshot: dict[str, Any]) -> str:
    """The snapshot in Prometheus exposition format (counters, gauges and two quantile summaries)."""
    lines: list[str] = []
    for name in ("requests", "scored", "failed", "shed", "rejected", "batches"):
        lines += [f"# TYPE introroute_{name}_total counter", f"introroute_{name}_total {snapshot[name]}"]
    lines.append("# TYPE introroute_unscored_total counter")
    lines += [f'introroute_unscored_total{{reason="{r}"}} {n}' for r, n in snapshot["by_reason"].items()]
    for name in ("mean_batch_size", "max_batch_size", "queued", "uptime_s"):
        lines += [f"# TYPE introroute_{name} gauge", f"introroute_{name} {_number(snapshot[name])}"]
    for name in ("latency_ms", "forward_ms"):
        lines.append(f"# TYPE introroute_{name} summary")
        for q, key in (("0.5", "p50"), ("0.95", "p95")):
            lines.append(f'introroute_{name}{{quantile="{q}"}} {_number(snapshot[name][key])}')
    return "\n".join(lines) + "\n"
