"""Audit sampling: a share of the requests a cheaper tier answered is also sent to a reference tier.

Why: the gatekeeper's promise ("kept local, still right") can only be checked on live traffic by
asking the reference model the same question and comparing. The reference call runs on a small
thread pool *after* the caller has its answer, so it adds no latency and cannot change or fail
the caller's call; the audited request's routing-log record is written once the reference
answered (or failed), holding both answers. ``Router.close()`` waits for audits in flight.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import litellm

from introroute.decision_log import AuditAnswer, Usage
from introroute.router.config import AuditConfig, TierConfig
from introroute.router.routing_log import RoutingLog
from introroute.router.secrets import Redactor

logger = logging.getLogger(__name__)

#: Audits waiting per worker at most; past it a sampled request is logged unaudited. Why: a slow
#: or down reference tier must not grow a queue of held records (and their prompts) without bound.
MAX_PENDING_PER_WORKER = 64


def answer_text(response: Any) -> str | None:
    """The text of a non-streamed chat completion's first choice; None when it has none."""
    try:
        content = response.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


def usage_of(response: Any) -> Usage | None:
    """Token counts of a response, None when it reports none."""
    usage = getattr(response, "usage", None)
    if usage is None:
        return None
    counts = {k: getattr(usage, k, None) for k in ("prompt_tokens", "completion_tokens")}
    return Usage(**{k: v if isinstance(v, int) else None for k, v in counts.items()})


class Auditor:
    """Samples eligible requests and answers them again with the reference tier, in the background."""

    def __init__(
        self,
        config: AuditConfig,
        reference: TierConfig,
        tiers: list[str],
        log: RoutingLog,
        redactor: Redactor,
    ) -> None:
        self.reference = reference
        # eligible: answered by a tier listed before the reference (cheaper), not the reference itself
        self._cheaper = frozenset(tiers[: tiers.index(reference.name)])
        self._share = config.share
        self._rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()
        self._log = log
        self._redactor = redactor
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="introroute-audit")
        self._slots = threading.BoundedSemaphore(MAX_PENDING_PER_WORKER * config.workers)
        self.dropped = 0  # sampled requests logged without an audit (queue full or closed)

    def wants(self, tier: str, stream: bool, error: str | None) -> bool:
        """Whether to audit a call answered by ``tier`` (streams and failed calls are not audited)."""
        if stream or error is not None or tier not in self._cheaper:
            return False
        with self._rng_lock:
            return self._rng.random() < self._share

    def submit(self, record: dict[str, Any], kwargs: Callable[[], dict[str, Any]]) -> None:
        """Ask the reference tier in the background, then write ``record`` with its answer."""
        if self._slots.acquire(blocking=False):
            try:
                self._pool.submit(self._run, record, kwargs)
                return
            except RuntimeError:  # closed: the record is still written, without an audit
                self._slots.release()
        with self._rng_lock:
            self.dropped += 1
        self._log.write(record)

    def _run(self, record: dict[str, Any], kwargs: Callable[[], dict[str, Any]]) -> None:
        try:
            self._log.write(self._audited(record, kwargs))
        finally:
            self._slots.release()

    def _audited(self, record: dict[str, Any], kwargs: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``record`` with the reference tier's answer (or why there is none)."""
        tier = self.reference
        assert tier.litellm_params is not None  # validated: the reference tier is remote
        answer = AuditAnswer(tier=tier.name, target=tier.target, model=tier.litellm_params.model)
        start = time.perf_counter()
        try:
            reply = litellm.completion(**{**kwargs(), "stream": False})
            answer.response = answer_text(reply)
            answer.usage = usage_of(reply)
        except Exception as exc:  # an audit failure is recorded, never raised
            answer.error = self._redactor.redact(f"{type(exc).__name__}: {exc}")
        answer.latency_ms = round((time.perf_counter() - start) * 1000.0, 3)
        try:
            return {**record, "audit": self._redactor.redact(answer.model_dump())}
        except Exception as exc:  # the record is written without it
            logger.warning("introroute: audit of %s not recorded: %s", tier.name, type(exc).__name__)
            return record

    def close(self) -> None:
        """Wait for the audits in flight, then stop the pool."""
        self._pool.shutdown(wait=True)
