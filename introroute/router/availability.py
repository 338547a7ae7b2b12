"""Load the gatekeeper once, off the request path, and back off when loading fails.

Why: a model load takes seconds (SmolLM2: ~10 s cached). Loading on the first request made that
request pay it outside any budget, and a load that failed was retried by every later request,
each paying the failure again. Here the load starts when the router is built (``startup``: the
constructor waits for it; ``background``: it does not, and budgeted requests are shed meanwhile).
A failed load is retried on a schedule (1 s, 2 s, 4 s ... at most 60 s apart), started by the
first request after the wait, in the background; until then requests fail fast with the error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Model = TypeVar("Model")

BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 60.0


class Unavailable(Exception):
    """The gatekeeper cannot score yet; ``reason`` is ``"loading"`` or ``"load_failed"``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Loader(Generic[Model]):
    """Builds a model with ``factory`` in a thread; :meth:`get` hands it out once it is ready.

    ``prepare`` runs on the loaded model before it is handed out (a warm-up forward that also
    seeds the batcher's cost model); its failure counts as a failed load.
    """

    def __init__(
        self,
        factory: Callable[[], Model],
        *,
        prepare: Callable[[Model], None] | None = None,
        name: str = "introroute-load",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._prepare = prepare
        self._name = name
        self._clock = clock
        self._cond = threading.Condition()
        self._model: Model | None = None
        self._loading = False
        self._error: BaseException | None = None
        self._failures = 0
        self._retry_at = 0.0
        self.load_s: float | None = None

    @property
    def state(self) -> str:
        """``idle`` (not started), ``loading``, ``ready`` or ``failed``."""
        with self._cond:
            if self._model is not None:
                return "ready"
            if self._loading:
                return "loading"
            return "failed" if self._error is not None else "idle"

    def start(self, *, wait: bool = False) -> None:
        """Start loading unless loaded, loading, or backing off; ``wait``: until this attempt ends."""
        with self._cond:
            self._start_locked()
            while wait and self._loading:
                self._cond.wait()

    def _start_locked(self) -> None:
        if self._model is not None or self._loading:
            return
        if self._error is not None and self._clock() < self._retry_at:
            return
        self._loading = True
        threading.Thread(target=self._load, name=self._name, daemon=True).start()

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            model = self._factory()
            if self._prepare is not None:
                self._prepare(model)
        except BaseException as exc:  # any failure must leave the router serving (fail-safe)
            with self._cond:
                self._failures += 1
                delay = min(BACKOFF_INITIAL_S * 2 ** (self._failures - 1), BACKOFF_MAX_S)
                self._error, self._retry_at, self._loading = exc, self._clock() + delay, False
                self._cond.notify_all()
            logger.warning("introroute: gatekeeper failed to load (%s); next try in %.0f s", exc, delay)
            return
        with self._cond:
            self._model, self._error, self._loading = model, None, False
            self.load_s = time.perf_counter() - started
            self._cond.notify_all()

    def get(self, timeout: float | None = 0.0) -> Model:
        """The model; waits up to ``timeout`` seconds for a load in progress (``None``: no limit).

        Raises :class:`Unavailable` when it is still loading after ``timeout``, or when the last
        attempt failed and the next one is not due (a due retry starts here, in the background).
        """
        deadline = None if timeout is None else time.perf_counter() + timeout
        with self._cond:
            self._start_locked()
            while self._model is None and self._loading:
                left = None if deadline is None else deadline - time.perf_counter()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
            if self._model is not None:
                return self._model
            if self._loading:
                raise Unavailable("loading", "gatekeeper is still loading")
            error = self._error
            retry = max(0.0, self._retry_at - self._clock())
        raise Unavailable(
            "load_failed",
            f"gatekeeper failed to load: {type(error).__name__}: {error} (next try in {retry:.0f} s)",
        )
