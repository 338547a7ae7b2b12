"""Run the gatekeeper under a time budget, batched across concurrent requests, and say what happened.

Why this shape: routing must never be less available than calling the strong model directly. A
gatekeeper that raises, returns garbage, is still loading, or cannot score in time (a cold model,
a queue of other requests) must cost at most the budget, after which the request goes to the
fail-safe tier, with a reason the decision records. Python cannot interrupt a running forward
pass, so scoring runs on one worker thread that batches concurrent requests
(:mod:`introroute.router.batching`); callers wait on a future for at most their budget, threads
and coroutines alike, and the event loop never runs a forward pass.

The budget (``timeout_ms``) covers everything the request spends in this step: queueing and the
forward. With ``overload="shed"`` (the default) a request whose expected completion is past the
budget is sent to the fail-safe tier at once (reason ``overload``) instead of waiting the whole
budget to be shed anyway; with ``overload="wait"`` it waits, up to the budget. Either way at most
``max_queue`` requests wait; more are shed. The model loads when the router is built (see
:mod:`introroute.router.availability`); budgeted requests arriving while it loads are shed (reason
``loading``), unbudgeted ones wait for it.

The budget can be derived from the machine instead of written down (``timeout_ms: auto``,
:attr:`BatchingOptions.budget_callers`): the warm-up measures what a batch costs here, and the
budget becomes twice the time to score ``budget_callers`` short requests arriving at once (the
burst itself, plus as long again for a batch already in flight and the machine's noise). A fixed
number that fits one machine sheds everything on a slower or busier one, and wastes time on a
faster one. Shedding is reported at WARNING when it starts and stops, and at most every
``interval_s`` while it lasts, with counts (:class:`ShedLog`); a shed request's decision says
how long shedding has lasted and how many requests it has turned away.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import numbers
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from introroute.errors import MessagesError
from introroute.router.availability import Loader, Unavailable
from introroute.router.batching import Batched, MicroBatcher
from introroute.scoring import BatchScorer, LocalModel, Messages, Scorer

# What waiting past the budget raises (distinct classes before Python 3.11).
_BUDGET_EXCEEDED = (TimeoutError, concurrent.futures.TimeoutError, asyncio.TimeoutError)

#: Reasons a request was not scored and went to the fail-safe tier. ``overload`` and ``loading``
#: are load shedding (the gatekeeper is healthy but busy or not ready); the rest are failures.
#: ``invalid_request``: the gatekeeper cannot read these messages (:class:`MessagesError` from
#: ``encode``), found per request before batching, so it never fails the requests batched with it.
SHED_REASONS = frozenset({"overload", "loading"})
FAIL_REASONS = frozenset({"timeout", "load_failed", "error", "invalid_scores", "invalid_request"})

_WARM_UP = [{"role": "user", "content": "What is the capital of France?"}]

#: An automatic budget is this many times the measured time to score ``budget_callers`` requests.
AUTO_BUDGET_FACTOR = 2.0
#: ... and never below this (thread wake-ups alone take milliseconds on a busy machine).
MIN_AUTO_BUDGET_S = 0.05

logger = logging.getLogger(__name__)


@dataclass
class Scoring:
    """The outcome of scoring one request; ``failure`` set means: use the fail-safe tier."""

    scores: dict[str, float] = field(default_factory=dict)
    raw_scores: dict[str, float] | None = None  # the gatekeeper's own, when ``scores`` are calibrated
    prefill: Any = None
    prompt_tokens: int | None = None
    truncated: bool = False
    gatekeeper_ms: float | None = None  # time this request spent in scoring (queue + forward)
    failure: str | None = None
    reason: str | None = None  # one of SHED_REASONS | FAIL_REASONS when ``failure`` is set
    queue_ms: float | None = None  # of gatekeeper_ms, the wait for its batch to start
    batch_size: int | None = None  # requests in the forward that scored it


@dataclass(frozen=True)
class BatchingOptions:
    """How concurrent requests are batched and admitted (``gatekeeper:`` keys of the router YAML)."""

    max_batch_size: int = 8
    max_wait_s: float = 0.002
    max_queue: int = 128
    overload: Literal["shed", "wait"] = "shed"
    load: Literal["startup", "background"] = "startup"
    #: With no ``timeout_s``: derive the budget at load for this many simultaneous requests
    #: (``timeout_ms: auto``); ``None``: no budget.
    budget_callers: int | None = None


@dataclass
class _Pending:
    """A request after admission: the future to wait on, or the outcome already decided."""

    future: concurrent.futures.Future[Batched] | None
    done: Scoring | None = None  # shed, or failed before it could be queued


class Gatekeeping:
    """Loads the gatekeeper and scores messages with it, batched, within ``timeout_s`` if set.

    ``keep_prefill``: prefill (keep the KV cache) instead of only scoring, so the local tier can
    continue from the scoring pass. Without ``timeout_s`` and with ``options.budget_callers``,
    the budget is measured at load (see the module doc); until then requests are shed
    (``loading``). ``label`` names this gatekeeper in log messages.
    """

    def __init__(
        self,
        factory: Callable[[], Scorer],
        *,
        keep_prefill: bool,
        timeout_s: float | None = None,
        options: BatchingOptions | None = None,
        label: str = "gatekeeper",
    ) -> None:
        self.keep_prefill = keep_prefill
        self.options = options or BatchingOptions()
        self._auto_budget = timeout_s is None and self.options.budget_callers is not None
        self.timeout_s = 0.0 if self._auto_budget else timeout_s
        self.shed_log = ShedLog(label)
        # The worker thread holds this object only weakly: a router that is dropped (without
        # close()) frees its model, and its worker stops.
        this = weakref.ref(self)

        def run_batch(items: list[tuple[Any, Any]]) -> Sequence[Any]:
            owner = this()
            if owner is None:
                raise RuntimeError("the router was garbage-collected")
            return owner._run_batch(items)

        self._batcher: MicroBatcher[tuple[Any, Any]] = MicroBatcher(
            run_batch,
            max_batch_size=self.options.max_batch_size,
            max_wait_s=self.options.max_wait_s,
            max_queue=self.options.max_queue,
            name="introroute-gk",
        )
        weakref.finalize(self, self._batcher.close)
        self._loader: Loader[Scorer] = Loader(factory, prepare=self._warm_up)
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._loader.start(wait=self.options.load == "startup")

    # -- the model -----------------------------------------------------------------------------

    def gatekeeper(self) -> Scorer:
        """The gatekeeper, waiting for a load in progress; raises :class:`Unavailable` if it failed."""
        return self._loader.get(timeout=None)

    def local_model(self) -> LocalModel | None:
        """The gatekeeper if it can also generate (serve the local tier), else ``None``."""
        gatekeeper = self.gatekeeper()
        return gatekeeper if isinstance(gatekeeper, LocalModel) else None

    def _warm_up(self, gatekeeper: Scorer) -> None:
        """Run small batches before serving: first-call costs (allocations, kernel selection) are
        paid here, not by a request, and the batcher's cost model starts from measured batch
        times (the cold first one not among them) instead of none."""
        if not isinstance(gatekeeper, BatchScorer):
            if self._auto_budget:  # one call per item: measure a call
                for _ in range(2):
                    start = time.perf_counter()
                    self._run(gatekeeper, _WARM_UP)
                    self._batcher.cost.observe(1.0, time.perf_counter() - start)
                self._derive_budget(1.0)
            return
        prompt = gatekeeper.encode(_WARM_UP)
        self._forward(gatekeeper, [prompt])
        sizes = sorted({1, min(4, self.options.max_batch_size)})
        if self._auto_budget:  # the budget rests on these: measure full batches too, twice
            sizes = sorted({*sizes, self.options.max_batch_size}) * 2
        for rows in sizes:
            start = time.perf_counter()
            self._forward(gatekeeper, [prompt] * rows)
            self._batcher.cost.observe(rows * len(prompt.ids), time.perf_counter() - start)
        if self._auto_budget:
            self._derive_budget(float(len(prompt.ids)))

    def _derive_budget(self, cost: float) -> None:
        """``timeout_s`` from the warm-up's measurements (``timeout_ms: auto``, see the module doc)."""
        callers = self.options.budget_callers
        assert callers is not None
        burst = self._batcher.burst_time(callers, cost)
        self.timeout_s = max(MIN_AUTO_BUDGET_S, AUTO_BUDGET_FACTOR * burst)
        logger.info(
            "introroute %s: scoring budget %.0f ms (measured: %d simultaneous requests take %.0f ms)",
            self.shed_log.label,
            self.timeout_s * 1000.0,
            callers,
            burst * 1000.0,
        )

    # -- scoring -------------------------------------------------------------------------------

    def score(self, messages: Messages) -> Scoring:
        """Score on the worker, waiting at most the budget; any failure becomes a fail-safe reason."""
        start = time.perf_counter()
        pending = self._admit(messages, start, 0.0 if self.timeout_s is not None else None)
        if pending.future is None:
            return self._outcome(pending.done, start)
        try:
            return self._outcome(pending.future.result(timeout=self._left(start)), start)
        except Exception as exc:
            pending.future.cancel()  # a no-op once its batch runs; drops it from the queue otherwise
            return self._outcome(exc, start)

    async def ascore(self, messages: Messages) -> Scoring:
        """:meth:`score` for coroutines: the loop awaits the worker's future, never the model."""
        start = time.perf_counter()
        if self.timeout_s is None and self._loader.state != "ready":
            await asyncio.to_thread(self._loader.start, wait=True)  # unbudgeted: wait for the load
        pending = self._admit(messages, start, 0.0)
        if pending.future is None:
            return self._outcome(pending.done, start)
        try:
            waiting = asyncio.wrap_future(pending.future)
            return self._outcome(await asyncio.wait_for(waiting, self._left(start)), start)
        except Exception as exc:  # on timeout wait_for cancels the future, which unqueues it
            return self._outcome(exc, start)

    def _left(self, start: float) -> float | None:
        """Seconds left of the budget of a request that started at ``start`` (None: no budget)."""
        if self.timeout_s is None:
            return None
        return max(0.0, self.timeout_s - (time.perf_counter() - start))

    def _admit(self, messages: Messages, start: float, load_timeout: float | None) -> _Pending:
        """Encode and queue one request, or decide at once that it will not be scored."""
        try:
            gatekeeper = self._loader.get(load_timeout)
            if isinstance(gatekeeper, BatchScorer):
                prompt = gatekeeper.encode(messages)
                item, cost = (prompt, messages), float(len(prompt.ids))
            else:
                item, cost = (None, messages), 1.0
        except Exception as exc:
            return _Pending(None, self._failed(exc, start))
        admission = self._batcher.submit(
            item, cost=cost, budget_s=self._left(start), shed=self.options.overload == "shed"
        )
        if admission.future is None:
            refused = Scoring(failure=f"gatekeeper overloaded: {admission.refused}", reason="overload")
            return _Pending(None, self._timed(refused, start))
        return _Pending(admission.future)

    def _forward(self, gatekeeper: Any, prompts: list[Any]) -> list[Any]:
        if self.keep_prefill and isinstance(gatekeeper, LocalModel):
            return list(gatekeeper.prefill_batch(prompts))
        return list(gatekeeper.scores_encoded(prompts))

    def _run_batch(self, items: list[tuple[Any, Any]]) -> Sequence[Any]:
        """The worker's batch function: one forward for a batch scorer, one call each otherwise."""
        gatekeeper = self._loader.get(0)
        if isinstance(gatekeeper, BatchScorer):
            return [self._as_scoring(r) for r in self._forward(gatekeeper, [p for p, _ in items])]
        results: list[Any] = []
        for _, messages in items:
            try:
                results.append(self._run(gatekeeper, messages))
            except Exception as exc:  # one bad request must not fail the others
                results.append(exc)
        return results

    def _run(self, gatekeeper: Scorer, messages: Messages) -> Scoring:
        """A Scoring holding the gatekeeper's raw scores: validated once, in :meth:`_scored`."""
        if self.keep_prefill and isinstance(gatekeeper, LocalModel):
            return self._as_scoring(gatekeeper.prefill(messages))
        return Scoring(scores=gatekeeper.scores(messages))

    @staticmethod
    def _as_scoring(result: Any) -> Scoring:
        if isinstance(result, Mapping):  # scores only
            return Scoring(scores=result)  # type: ignore[arg-type]  # validated in _scored
        tokens = getattr(result, "prompt_tokens", None)
        return Scoring(
            scores=result.scores,
            prefill=result,
            prompt_tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None,
            truncated=bool(getattr(result, "truncated", False)),
        )

    # -- outcomes ------------------------------------------------------------------------------

    @staticmethod
    def _timed(scoring: Scoring, start: float) -> Scoring:
        scoring.gatekeeper_ms = (time.perf_counter() - start) * 1000.0
        return scoring

    def _scored(self, batched: Batched, start: float) -> Scoring:
        if isinstance(batched.value, Exception):
            return self._failed(batched.value, start)
        scoring: Scoring = batched.value
        self._timed(scoring, start)
        scoring.queue_ms = batched.queue_s * 1000.0
        scoring.batch_size = batched.batch_size
        scoring.scores, scoring.failure = validate_scores(scoring.scores)
        if scoring.failure is not None:
            scoring.reason, scoring.prefill = "invalid_scores", None
        return scoring

    def _failed(self, exc: BaseException, start: float) -> Scoring:
        if isinstance(exc, Unavailable):
            return self._timed(Scoring(failure=str(exc), reason=exc.reason), start)
        if isinstance(exc, MessagesError):
            return self._timed(Scoring(failure=str(exc), reason="invalid_request"), start)
        if isinstance(exc, _BUDGET_EXCEEDED) and self.timeout_s is not None:
            budget = f"{self.timeout_s * 1000:.0f} ms"
            return self._timed(
                Scoring(failure=f"gatekeeper exceeded its time budget of {budget}", reason="timeout"), start
            )
        return self._timed(
            Scoring(failure=f"gatekeeper error: {type(exc).__name__}: {exc}", reason="error"), start
        )

    def _outcome(self, result: Batched | Scoring | BaseException | None, start: float) -> Scoring:
        """The request's final Scoring (from its batch, an early decision, or an error), counted."""
        if isinstance(result, Batched):
            scoring = self._scored(result, start)
        elif isinstance(result, BaseException):
            scoring = self._failed(result, start)
        else:
            assert result is not None
            scoring = result
        with self._counts_lock:
            self._counts[scoring.reason or "scored"] += 1
        episode = self.shed_log.record(scoring.reason)
        if episode is not None and scoring.reason in SHED_REASONS:
            scoring.failure = f"{scoring.failure}; {episode}"
        return scoring

    def stats(self) -> dict[str, Any]:
        """Counters since the router was built, and the batcher's state now (see docs/router.md)."""
        with self._counts_lock:
            counts = dict(self._counts)
        fixed, per_unit = self._batcher.cost.coefficients()
        batches, items = self._batcher.batches, self._batcher.items
        return {
            "state": self._loader.state,
            "budget_ms": self.timeout_s * 1000.0 if self.timeout_s is not None else None,
            "shedding": self.shed_log.shedding,
            "scored": counts.get("scored", 0),
            "shed": sum(counts.get(r, 0) for r in SHED_REASONS),
            "failed": sum(counts.get(r, 0) for r in FAIL_REASONS),
            "by_reason": {r: n for r, n in sorted(counts.items()) if r != "scored"},
            "queued": self._batcher.depth(),
            "batches": batches,
            "mean_batch_size": items / batches if batches else None,
            "batch_cost": {
                "fixed_ms": fixed * 1000.0,
                "per_token_ms": per_unit * 1000.0,
                "spread": self._batcher.cost.spread,
            },
            "load_s": self._loader.load_s,
        }

    def close(self) -> None:
        """Stop the worker thread (waiting requests are cancelled: they go to the fail-safe tier)."""
        self._batcher.close()


class ShedLog:
    """Reports load shedding at WARNING: when it starts, at most every ``interval_s`` while it
    lasts, and when it stops, each time with counts.

    Why not one line per shed request: shedding happens exactly when the machine has least time
    for logging, and a flood hides the one fact an operator needs (the gatekeeper is saving
    nothing right now). Why not DEBUG only: silently sending every request to the expensive
    tier is the costliest failure a router has. An episode starts with a shed request and ends
    with the first request after ``interval_s`` without any (the end is noticed then, not when
    the last shed happened); requests that failed otherwise (timeouts) count as not scored.
    """

    def __init__(self, label: str, *, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.label = label
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None  # start of the episode; None: not shedding
        self._last_shed = self._last_report = 0.0
        self._episode: Counter[str] = Counter()  # reason (or "scored") -> requests, this episode
        self._window: Counter[str] = Counter()  # the same since the last report

    def record(self, reason: str | None) -> str | None:
        """Count one request's outcome; during an episode, a summary of it for the decision."""
        now = self._clock()
        shed = reason in SHED_REASONS
        with self._lock:
            if self._since is None:
                if not shed:
                    return None
                self._since = self._last_report = now
                self._episode.clear()
                self._window.clear()
                logger.warning(
                    "introroute %s: shedding started (reason %s): requests go to the fail-safe tier "
                    "unscored until it keeps up",
                    self.label,
                    reason,
                )
            key = reason or "scored"
            if not shed and now - self._last_shed >= self.interval_s:
                self._episode[key] += 1
                logger.warning(
                    "introroute %s: shedding stopped after %.0f s: %s",
                    self.label,
                    now - self._since,
                    self._summary(self._episode),
                )
                self._since = None
                return None
            self._episode[key] += 1
            self._window[key] += 1
            if shed:
                self._last_shed = now
            if now - self._last_report >= self.interval_s:
                logger.warning(
                    "introroute %s: still shedding: %s in the last %.0f s (%s since it started %.0f s ago)",
                    self.label,
                    self._summary(self._window),
                    now - self._last_report,
                    self._summary(self._episode),
                    now - self._since,
                )
                self._last_report = now
                self._window.clear()
            return f"shedding for {now - self._since:.1f} s: {self._summary(self._episode)}"

    @staticmethod
    def _summary(counts: Counter[str]) -> str:
        total = sum(counts.values())
        shed = {r: n for r, n in sorted(counts.items()) if r in SHED_REASONS}
        detail = ", ".join(f"{r} {n}" for r, n in shed.items())
        return f"{sum(shed.values())} of {total} requests shed ({detail or 'none'})"

    @property
    def shedding(self) -> bool:
        """Whether an episode is under way."""
        with self._lock:
            return self._since is not None


def validate_scores(raw: Any) -> tuple[dict[str, float], str | None]:
    """``(scores as plain floats, None)``, or ``({}, why)`` when any score is unusable.

    The one place scores are checked, so everything after it (calibration, the policy, the
    decision, the JSON log) sees plain finite floats in [0, 1]. Accepted: any real number, numpy
    floats and ints included (``np.float32(0.9)``). Rejected: bools (``True`` is not a
    probability), strings, ``None``, NaN, infinities, values outside [0, 1], non-string targets.
    Invalid scores are dropped whole (the request goes to the fail-safe tier): a decision must not
    carry values it cannot serialise, and a gatekeeper returning garbage for one target is not
    trusted for the others.
    """
    if not isinstance(raw, Mapping):
        return {}, f"gatekeeper returned {type(raw).__name__} instead of a mapping of target -> score"
    scores: dict[str, float] = {}
    problems: list[str] = []
    for target, p in raw.items():
        if not isinstance(target, str):
            problems.append(f"a target named by a {type(target).__name__}")
        elif isinstance(p, bool) or not isinstance(p, numbers.Real):
            problems.append(f"{target!r}: not a number ({type(p).__name__})")
        elif not (math.isfinite(value := _as_float(p)) and 0.0 <= value <= 1.0):
            problems.append(f"{target!r}: {value!r} is not a probability in [0, 1]")
        else:
            scores[target] = value
    if problems:
        return {}, f"gatekeeper returned invalid scores: {'; '.join(problems)}"
    if not scores:
        return {}, "gatekeeper returned no scores"
    return scores, None


def _as_float(value: numbers.Real) -> float:
    try:
        return float(value)
    except (OverflowError, TypeError, ValueError):  # a huge Fraction, an odd Real subclass
        return math.nan
