"""Micro-batching with admission control: many concurrent callers, one padded forward per batch.

Why a queue of our own (in the style of vLLM's ``AsyncMicrobatchTokenizer``) rather than a batching
library such as ``batched``: admission control must see the queue as it is (what is waiting, how
long the batch in flight has run, how long a batch of this size takes) to shed a request *before*
it waits, and one queue must serve threads and asyncio alike. Libraries wrap a function and hide
that state. The whole mechanism is small:

- callers :meth:`MicroBatcher.submit` an item with its cost (prompt tokens) and get a
  ``concurrent.futures.Future``; threads wait on it with a timeout, coroutines await
  ``asyncio.wrap_future`` of it, so the event loop never runs (or waits on) a forward pass;
- one worker thread takes the oldest items, up to ``max_batch_size``, waiting at most ``max_wait_s``
  after the oldest arrived for more to join, and runs them as one call of the batch function.
  It waits only while items arrive closer together than that (a running average of the gaps):
  a lone caller, or callers that come one at a time, would wait for company that never comes;
  callers that pile up while a batch runs join the next one anyway;
- a :class:`CostModel` learns how long a batch takes from the batches it ran, so
  :meth:`MicroBatcher.submit` can refuse up front an item whose expected completion (planned one
  standard deviation above the mean) is past its budget, or that would make the batch it joins
  finish after the budget of an item already in it, or any item once ``max_queue`` are waiting
  (the queue, and so memory, stays bounded). An idle worker always admits, so a stale,
  pessimistic estimate is corrected by the next forward instead of shedding everything.

An item whose caller gave up (its future cancelled, or its deadline passed) is dropped when the
worker reaches it, so abandoned requests cost no forward pass.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")

#: Forgetting factor of the cost model: the last ~10 batches dominate its estimate.
_DECAY = 0.9

_live: weakref.WeakSet[MicroBatcher[Any]] = weakref.WeakSet()


@atexit.register
def _stop_workers() -> None:
    """Stop every worker before the interpreter tears down: a worker thread that has run torch
    must not still be parked when torch's own state is destroyed (the process would abort with
    "terminate called without an active exception")."""
    for batcher in list(_live):
        batcher.close()
        if batcher._thread.ident is not None:
            batcher._thread.join(timeout=5.0)


@dataclass(frozen=True)
class Batched:
    """One item's result and how it was obtained (for decisions and statistics)."""

    value: Any
    queue_s: float  # from submit to the start of its batch
    batch_size: int  # items in that batch


@dataclass
class _Entry(Generic[Item]):
    item: Item
    cost: float
    enqueued: float
    deadline: float | None
    future: concurrent.futures.Future[Batched] = field(default_factory=concurrent.futures.Future)


@dataclass(frozen=True)
class Admission:
    """The answer of :meth:`MicroBatcher.submit`: a future to wait on, or why the item was refused."""

    future: concurrent.futures.Future[Batched] | None
    refused: str | None = None
    expected_s: float | None = None


class CostModel:
    """Seconds per batch as ``fixed + per_unit * units``, fitted by exponentially weighted least squares.

    ``units`` is what the batch function's time grows with: padded tokens (rows x longest prompt)
    for the gatekeeper, items for scorers that do not say. With one distinct size seen so far the
    fit is proportional (no fixed part); estimates are 0 until the first observation.
    """

    def __init__(self) -> None:
        self._w = self._x = self._y = self._xx = self._xy = 0.0
        self._rel_var = 0.0  # running mean of squared relative errors of the estimate
        self.observations = 0

    @property
    def spread(self) -> float:
        """Relative standard deviation of batch times around the estimate (0 until measured)."""
        return math.sqrt(self._rel_var)

    def observe(self, units: float, seconds: float) -> None:
        """Add one batch's measured duration."""
        predicted = self.estimate(units)
        if self.observations >= 2 and predicted > 0.0:
            error = seconds / predicted - 1.0
            self._rel_var = _DECAY * self._rel_var + (1.0 - _DECAY) * error * error
        for name in ("_w", "_x", "_y", "_xx", "_xy"):
            setattr(self, name, getattr(self, name) * _DECAY)
        self._w += 1.0
        self._x += units
        self._y += seconds
        self._xx += units * units
        self._xy += units * seconds
        self.observations += 1

    def coefficients(self) -> tuple[float, float]:
        """``(fixed_s, per_unit_s)`` of the current fit."""
        if self._w == 0.0 or self._x <= 0.0:
            return 0.0, 0.0
        mean_x, mean_y = self._x / self._w, self._y / self._w
        var = self._xx / self._w - mean_x * mean_x
        if var > 1e-9 * max(1.0, mean_x * mean_x):
            slope = (self._xy / self._w - mean_x * mean_y) / var
            fixed = mean_y - slope * mean_x
            if slope > 0.0 and fixed >= 0.0:
                return fixed, slope
        return 0.0, mean_y / mean_x  # one size seen (or a fit without physical meaning)

    def estimate(self, units: float) -> float:
        """Expected seconds for a batch of ``units``."""
        fixed, slope = self.coefficients()
        return fixed + slope * units


def batch_units(costs: Sequence[float]) -> float:
    """A padded batch's size: rows times the longest row (left padding fills the rest)."""
    return len(costs) * max(costs, default=0.0)


class MicroBatcher(Generic[Item]):
    """Gathers concurrently submitted items into batches for one worker thread.

    ``run(items)`` returns one result per item, in order (an item's result may be an exception
    instance, for the caller to raise); if ``run`` raises, every item of that batch gets the
    exception. ``max_wait_s`` bounds the extra latency batching adds to a lone request.
    """

    def __init__(
        self,
        run: Callable[[list[Item]], Sequence[Any]],
        *,
        max_batch_size: int = 8,
        max_wait_s: float = 0.002,
        max_queue: int = 128,
        name: str = "introroute-batcher",
    ) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.cost = CostModel()
        self._queue: deque[_Entry[Item]] = deque()
        self._cond = threading.Condition()
        self._flight: tuple[float, float] | None = None  # (start, estimated seconds) of the running batch
        self._closed = False
        self._last_arrival: float | None = None
        self._arrival_gap = 0.0  # running average of the time between submits
        self.batches = 0
        self.items = 0
        # Started by the first submit: a router that never queues (a remote gatekeeper scores
        # over HTTP) holds no idle thread.
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        _live.add(self)

    # -- callers -------------------------------------------------------------------------------

    def submit(
        self, item: Item, *, cost: float = 1.0, budget_s: float | None = None, shed: bool = True
    ) -> Admission:
        """Queue ``item`` unless it cannot be served: the queue is full, or (``shed``) its expected
        completion lies beyond ``budget_s``. Admission and queueing happen under one lock, so a
        burst of callers cannot all see the same empty queue.
        """
        now = time.perf_counter()
        with self._cond:
            if self._closed:
                return Admission(None, "the gatekeeper is shut down")
            waiting = sum(1 for e in self._queue if not e.future.cancelled())
            if waiting >= self.max_queue:
                return Admission(None, f"queue full ({waiting} requests waiting)")
            expected, shared_deadline = self._expected_completion(cost, now)
            # An idle worker always admits: nothing is ahead of the item, and its own forward is
            # what corrects a cost estimate that has become too pessimistic (otherwise a bad
            # estimate would shed everything, forever, with nothing left to measure).
            idle = self._flight is None and waiting == 0
            if shed and budget_s is not None and not idle:
                if expected > budget_s:
                    return Admission(
                        None,
                        f"expected wait {expected * 1000:.0f} ms exceeds the {budget_s * 1000:.0f} ms "
                        f"budget ({waiting} waiting)",
                        expected,
                    )
                if shared_deadline is not None and now + expected > shared_deadline:
                    # Joining would make the batch it joins finish after a request already in it
                    # must be done: that earlier request would time out instead.
                    return Admission(
                        None, f"the next batch is full for its budgets ({waiting} waiting)", expected
                    )
            entry = _Entry(item, float(cost), now, now + budget_s if budget_s is not None else None)
            if self._last_arrival is not None:
                self._arrival_gap = 0.8 * self._arrival_gap + 0.2 * (now - self._last_arrival)
            self._last_arrival = now
            self._queue.append(entry)
            if self._thread.ident is None:
                self._thread.start()
            self._cond.notify()
        return Admission(entry.future, None, expected)

    def expected_wait(self, cost: float = 1.0) -> float:
        """Seconds until an item of ``cost`` submitted now would be done (0 before any batch ran)."""
        with self._cond:
            return self._expected_completion(cost, time.perf_counter())[0]

    def _expected_completion(self, cost: float, now: float) -> tuple[float, float | None]:
        """Seconds until a new item of ``cost`` would be done: the running batch's remaining time
        plus every batch up to and including the new item's (the last, which it joins); and the
        earliest deadline of the items already in that batch, which its growth must not pass."""
        total = self._gather_wait()  # the next batch may wait this long for company
        if self._flight is not None:
            start, estimate = self._flight
            # A batch past its estimate is assumed to run on for as long as it has overrun:
            # a hung forward then sheds newcomers instead of admitting them behind it.
            total += abs(estimate - (now - start))
        # One standard deviation above the mean: where batch times vary (a shared machine),
        # admitting on the mean would let about half of the requests admitted close to their
        # budget time out after waiting all of it.
        margin = 1.0 + self.cost.spread
        live = [e for e in self._queue if not e.future.cancelled()]
        costs = [e.cost for e in live] + [cost]
        for start in range(0, len(costs), self.max_batch_size):
            total += margin * self.cost.estimate(batch_units(costs[start : start + self.max_batch_size]))
        last = live[(len(costs) - 1) // self.max_batch_size * self.max_batch_size :]
        deadlines = [e.deadline for e in last if e.deadline is not None]
        return total, min(deadlines, default=None)

    def burst_time(self, items: int, cost: float) -> float:
        """Seconds an idle worker takes to serve ``items`` items of ``cost`` submitted at once:
        full batches one after another, each planned one standard deviation above its mean (as
        admission plans them)."""
        margin = 1.0 + self.cost.spread
        full, rest = divmod(items, self.max_batch_size)
        total = full * self.cost.estimate(batch_units([cost] * self.max_batch_size))
        if rest:
            total += self.cost.estimate(batch_units([cost] * rest))
        return margin * total

    def _gather_wait(self) -> float:
        """``max_wait_s`` while items arrive closer together than that, else no wait at all."""
        return self.max_wait_s if self._arrival_gap < self.max_wait_s else 0.0

    def depth(self) -> int:
        """Items waiting (not yet in a batch)."""
        with self._cond:
            return sum(1 for e in self._queue if not e.future.cancelled())

    def close(self) -> None:
        """Stop the worker after the batch in flight; waiting items fail with ``RuntimeError``."""
        with self._cond:
            self._closed = True
            for entry in self._queue:
                if entry.future.set_running_or_notify_cancel():
                    entry.future.set_exception(RuntimeError("the gatekeeper was shut down"))
            self._queue.clear()
            self._cond.notify_all()

    # -- worker --------------------------------------------------------------------------------

    def _take(self) -> list[_Entry[Item]] | None:
        """Block until a batch is ready: the oldest live items, up to the size limit."""
        with self._cond:
            while True:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return None
                # Let the batch fill until max_wait after its oldest item arrived (items that
                # waited behind the previous batch therefore do not wait again).
                gather_until = self._queue[0].enqueued + self._gather_wait()
                while len(self._queue) < self.max_batch_size and not self._closed:
                    left = gather_until - time.perf_counter()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = []
                now = time.perf_counter()
                while self._queue and len(batch) < self.max_batch_size:
                    entry = self._queue.popleft()
                    if not entry.future.set_running_or_notify_cancel():
                        continue  # its caller gave up
                    if entry.deadline is not None and now >= entry.deadline:
                        # Its caller is giving up now: do not spend a forward on it. (An
                        # exception, not a cancel, so an awaiting task is not itself cancelled.)
                        entry.future.set_exception(TimeoutError("deadline passed while queued"))
                        continue
                    batch.append(entry)
                if batch:
                    estimate = self.cost.estimate(batch_units([e.cost for e in batch]))
                    self._flight = (now, estimate)
                    return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            start = time.perf_counter()
            try:
                results = list(self._run([e.item for e in batch]))
                if len(results) != len(batch):
                    raise RuntimeError(
                        f"batch function returned {len(results)} results for {len(batch)} items"
                    )
            except BaseException as exc:  # every caller of this batch sees the failure
                for entry in batch:
                    entry.future.set_exception(exc)
                results = None
            elapsed = time.perf_counter() - start
            with self._cond:
                self._flight = None
                if results is not None:  # a failing batch says nothing about how long one takes
                    self.cost.observe(batch_units([e.cost for e in batch]), elapsed)
                self.batches += 1
                self.items += len(batch)
            if results is not None:
                for entry, value in zip(batch, results, strict=True):
                    entry.future.set_result(Batched(value, start - entry.enqueued, len(batch)))
