"""The gatekeeper's HTTP API (FastAPI): ``POST /score``, ``GET /health``, ``GET /metrics``.

Why these three: ``/score`` is all a router needs; ``/health`` answers only once the model is
loaded (``introroute serve`` loads it before listening), so an orchestrator's readiness probe and a
router's first request never wait on a cold model; ``/metrics`` shows whether batching happens
(mean batch size), whether load is shed, and what a score costs, in Prometheus text or JSON.

Client errors are 400s that name the problem (``messages is empty: nothing to score``), never 500s:
a router must not retry them or count them as the gatekeeper failing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from introroute.errors import MessagesError
from introroute.messages import normalize_messages
from introroute.scoring import Scorer
from introroute.server.batching import Overloaded, ScoreBatcher


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


def create_app(
    scorer: Scorer, *, max_batch: int = 16, max_wait_ms: float = 5.0, max_queue: int = 256
) -> FastAPI:
    """The scoring service for an already-loaded ``scorer`` (IntroLM, a baseline, a test double)."""
    batcher = ScoreBatcher(scorer, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue)
    targets = list(scorer.targets)
    rejected = {"count": 0}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await batcher.aclose()

    app = FastAPI(title="introroute gatekeeper", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        rejected["count"] += 1
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return _error(400, problems, "invalid_request_error")

    @app.post("/score", response_model=ScoreResponse)
    async def score(body: ScoreRequest) -> Any:
        try:
            normalize_messages(body.messages)  # reject bad input before it can fail a whole batch
        except MessagesError as exc:
            rejected["count"] += 1
            return _error(400, str(exc), "invalid_request_error")
        unknown = sorted(set(body.targets or []) - set(targets))
        if unknown:
            rejected["count"] += 1
            return _error(
                400, f"unknown targets {unknown}; this gatekeeper scores {targets}", "invalid_request_error"
            )
        try:
            result = await batcher.score(body.messages)
        except Overloaded as exc:
            return _error(503, f"gatekeeper overloaded: {exc}", "overloaded", {"Retry-After": "1"})
        except Exception as exc:
            return _error(500, f"gatekeeper error: {type(exc).__name__}: {exc}", "server_error")
        wanted = body.targets or targets
        return ScoreResponse(
            scores={t: result.scores[t] for t in wanted},
            batch_size=result.batch_size,
            queue_ms=result.queue_ms,
            forward_ms=result.forward_ms,
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "targets": targets,
            "trained": getattr(scorer, "trained", None),
            "max_batch": batcher.max_batch,
            "max_wait_ms": batcher.max_wait_s * 1000.0,
        }

    started = time.time()

    @app.get("/metrics", response_model=None)
    async def metrics(format: str = "prometheus") -> Any:
        snapshot = {
            **batcher.stats.snapshot(),
            "rejected": rejected["count"],
            "uptime_s": time.time() - started,
        }
        if format == "json":
            return snapshot
        return PlainTextResponse(_prometheus(snapshot), media_type="text/plain; version=0.0.4")

    return app


def _prometheus(snapshot: dict[str, Any]) -> str:
    """The snapshot in Prometheus exposition format (counters, gauges and two quantile summaries)."""
    lines: list[str] = []
    for name in ("requests", "scored", "failed", "shed", "rejected", "batches"):
        lines += [f"# TYPE introroute_{name}_total counter", f"introroute_{name}_total {snapshot[name]}"]
    for name in ("mean_batch_size", "max_batch_size", "uptime_s"):
        lines += [f"# TYPE introroute_{name} gauge", f"introroute_{name} {snapshot[name]}"]
    for name in ("latency_ms", "forward_ms"):
        lines.append(f"# TYPE introroute_{name} summary")
        for q, key in (("0.5", "p50"), ("0.95", "p95")):
            value = snapshot[name][key]
            lines.append(f'introroute_{name}{{quantile="{q}"}} {"NaN" if value is None else value}')
    return "\n".join(lines) + "\n"
