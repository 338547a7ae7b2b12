"""Gather concurrent score requests into one padded forward (the server's micro-batcher).

Why: one forward over 16 short prompts costs little more than over one, so a server that scores
each request on its own wastes most of its CPU under load. Requests wait at most ``max_wait_ms``
for company (or until ``max_batch`` are queued); while a forward runs, new requests queue up and
form the next batch. The forward runs on one worker thread, so the event loop never blocks on
torch and the model never runs twice at once. A bounded queue sheds load at once (``Overloaded``)
instead of letting requests wait past any useful deadline.

Everything a caller needs is :meth:`ScoreBatcher.score`; the batching policy lives behind it so a
shared micro-batcher can replace this one without touching the HTTP layer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from introroute.scoring import Messages, Scorer


class Overloaded(RuntimeError):
    """The queue is full: the request was shed without waiting."""


@dataclass
class Scored:
    """One request's scores and what it cost."""

    scores: dict[str, float]
    batch_size: int
    queue_ms: float
    forward_ms: float


@dataclass
class _Pending:
    messages: Messages
    future: asyncio.Future[Scored]
    queued: float = field(default_factory=time.perf_counter)


@dataclass
class Stats:
    """Counters and recent latencies for ``/metrics`` (latencies: a bounded window, not all time)."""

    requests: int = 0
    scored: int = 0
    failed: int = 0
    shed: int = 0
    batches: int = 0
    max_batch_seen: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2048))
    forward_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2048))

    def snapshot(self) -> dict[str, Any]:
        """Plain numbers: counts, mean batch size, p50/p95 of request latency and forward time."""
        return {
            "requests": self.requests,
            "scored": self.scored,
            "failed": self.failed,
            "shed": self.shed,
            "batches": self.batches,
            "mean_batch_size": (self.scored + self.failed) / self.batches if self.batches else 0.0,
            "max_batch_size": self.max_batch_seen,
            "latency_ms": _percentiles(self.latencies_ms),
            "forward_ms": _percentiles(self.forward_ms),
        }


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None}
    ranked = sorted(values)
    return {"p50": ranked[len(ranked) // 2], "p95": ranked[min(len(ranked) - 1, int(len(ranked) * 0.95))]}


def score_many(scorer: Scorer, conversations: Sequence[Messages]) -> list[dict[str, float]]:
    """Per-conversation scores, in one padded forward when the scorer has ``scores_batch``."""
    batch = getattr(scorer, "scores_batch", None)
    if batch is None:
        return [dict(scorer.scores(m)) for m in conversations]
    targets = list(scorer.targets)
    rows = batch(list(conversations), batch_size=max(len(conversations), 1))
    return [dict(zip(targets, (float(p) for p in row), strict=True)) for row in rows]


class ScoreBatcher:
    """Queue -> batches of up to ``max_batch`` (waiting at most ``max_wait_ms``) -> one forward each."""

    def __init__(
        self, scorer: Scorer, *, max_batch: int = 16, max_wait_ms: float = 5.0, max_queue: int = 256
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_ms >= 0")
        self.scorer = scorer
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.stats = Stats()
        self._queue: deque[_Pending] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="introroute-serve"
        )

    async def score(self, messages: Messages) -> Scored:
        """This conversation's scores, computed in a batch with whatever else is queued."""
        self.stats.requests += 1
        if len(self._queue) >= self.max_queue:
            self.stats.shed += 1
            raise Overloaded(f"{len(self._queue)} requests already queued (max_queue={self.max_queue})")
        self._ensure_running()
        pending = _Pending(messages, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        assert self._wakeup is not None
        self._wakeup.set()
        return await pending.future

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                if len(self._queue) < self.max_batch and self.max_wait_s > 0:
                    await asyncio.sleep(self._remaining_wait())
                batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
                await self._forward(batch)

    def _remaining_wait(self) -> float:
        """Wait until the oldest queued request has waited ``max_wait_ms``, not longer."""
        return max(0.0, self._queue[0].queued + self.max_wait_s - time.perf_counter())

    async def _forward(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(
                self._worker, score_many, self.scorer, [p.messages for p in batch]
            )
        except Exception as exc:
            self._record(batch, started, failed=True)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        done = time.perf_counter()
        self._record(batch, started, failed=False)
        for pending, scores in zip(batch, results, strict=True):
            if not pending.future.done():  # the client may have gone away meanwhile
                pending.future.set_result(
                    Scored(
                        scores=scores,
                        batch_size=len(batch),
                        queue_ms=(started - pending.queued) * 1000.0,
                        forward_ms=(done - started) * 1000.0,
                    )
                )

    def _record(self, batch: list[_Pending], started: float, *, failed: bool) -> None:
        now = time.perf_counter()
        stats = self.stats
        stats.batches += 1
        stats.max_batch_seen = max(stats.max_batch_seen, len(batch))
        stats.forward_ms.append((now - started) * 1000.0)
        if failed:
            stats.failed += len(batch)
        else:
            stats.scored += len(batch)
        stats.latencies_ms.extend((now - p.queued) * 1000.0 for p in batch)

    async def aclose(self) -> None:
        """Stop the batching task and the worker thread (queued requests are cancelled)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for pending in self._queue:
            pending.future.cancel()
        self._queue.clear()
        self._worker.shutdown(wait=False, cancel_futures=True)
