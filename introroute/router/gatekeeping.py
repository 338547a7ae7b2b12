"""Run the gatekeeper under a time budget and turn any failure into a fail-safe reason.

Why a separate step with its own thread: routing must never be less available than calling the
strong model directly. A gatekeeper that raises, returns garbage or is slower than its budget
(a cold model, an overloaded CPU) must cost at most the budget, after which the request goes to
the fail-safe tier. Python cannot interrupt a running forward pass, so scoring runs on one worker
thread and the caller stops waiting when the budget is spent; the single worker also keeps
concurrent requests from running the same model in parallel.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import numbers
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from introroute.scoring import LocalModel, Messages, Scorer

# What waiting past the budget raises (distinct classes before Python 3.11).
_BUDGET_EXCEEDED = (TimeoutError, concurrent.futures.TimeoutError, asyncio.TimeoutError)


@dataclass
class Scoring:
    """The outcome of scoring one request; ``failure`` set means: use the fail-safe tier."""

    scores: dict[str, float] = field(default_factory=dict)
    raw_scores: dict[str, float] | None = None  # the gatekeeper's own, when ``scores`` are calibrated
    prefill: Any = None
    prompt_tokens: int | None = None
    truncated: bool = False
    gatekeeper_ms: float | None = None
    failure: str | None = None


class Gatekeeping:
    """Lazily builds the gatekeeper and scores messages with it, within ``timeout_s`` if set.

    ``keep_prefill``: call ``prefill()`` instead of ``scores()`` so the local tier can continue
    from the scoring pass's KV cache.
    """

    def __init__(
        self, factory: Callable[[], Scorer], *, keep_prefill: bool, timeout_s: float | None = None
    ) -> None:
        self._factory = factory
        self._gatekeeper: Scorer | None = None
        self._load_lock = threading.Lock()
        self.keep_prefill = keep_prefill
        self.timeout_s = timeout_s
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="introroute-gk"
        )

    def gatekeeper(self) -> Scorer:
        """The gatekeeper, built on first use (loading a model takes seconds; never at import)."""
        with self._load_lock:
            if self._gatekeeper is None:
                self._gatekeeper = self._factory()
            return self._gatekeeper

    def local_model(self) -> LocalModel | None:
        """The gatekeeper if it can also generate (serve the local tier), else ``None``."""
        gatekeeper = self.gatekeeper()
        return gatekeeper if isinstance(gatekeeper, LocalModel) else None

    def score(self, messages: Messages) -> Scoring:
        """Score on the caller's thread, or on the worker when a time budget applies."""
        try:
            gatekeeper = self.gatekeeper()
            start = time.perf_counter()
            if self.timeout_s is None:
                return self._scored(self._run(gatekeeper, messages), start)
            future = self._worker.submit(self._run, gatekeeper, messages)
            try:
                return self._scored(future.result(timeout=self.timeout_s), start)
            finally:
                future.cancel()  # a no-op once running; drops it if it is still queued
        except Exception as exc:
            return self._failed(exc)

    async def ascore(self, messages: Messages) -> Scoring:
        """Score on the worker thread so the event loop never blocks on a forward pass."""
        loop = asyncio.get_running_loop()
        try:
            gatekeeper = await loop.run_in_executor(self._worker, self.gatekeeper)
            start = time.perf_counter()
            pending = loop.run_in_executor(self._worker, self._run, gatekeeper, messages)
            return self._scored(await asyncio.wait_for(pending, self.timeout_s), start)
        except Exception as exc:
            return self._failed(exc)

    def _run(self, gatekeeper: Scorer, messages: Messages) -> tuple[Any, Scoring]:
        """(the raw scores, a Scoring without them yet): validated once, in :meth:`_scored`."""
        if self.keep_prefill and isinstance(gatekeeper, LocalModel):
            prefill = gatekeeper.prefill(messages)
            tokens = getattr(prefill, "prompt_tokens", None)
            return prefill.scores, Scoring(
                prefill=prefill,
                prompt_tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None,
                truncated=bool(getattr(prefill, "truncated", False)),
            )
        return gatekeeper.scores(messages), Scoring()

    def _scored(self, result: tuple[Any, Scoring], start: float) -> Scoring:
        raw, scoring = result
        scoring.gatekeeper_ms = (time.perf_counter() - start) * 1000.0
        scoring.scores, scoring.failure = validate_scores(raw)
        return scoring

    def _failed(self, exc: BaseException) -> Scoring:
        if isinstance(exc, _BUDGET_EXCEEDED) and self.timeout_s is not None:
            return Scoring(failure=f"gatekeeper exceeded its time budget of {self.timeout_s * 1000:.0f} ms")
        return Scoring(failure=f"gatekeeper error: {type(exc).__name__}: {exc}")


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
