"""Append one JSON line per routed request: the decision, timing, usage and outcome.

Why a log of its own: routing quality is judged offline (how often did the cheap tier answer,
what did it cost, would another threshold have done better), and policies can be replayed over
these records. Records carry no message text (privacy) and pass through the router's redactor
(secrets). A failing disk must not fail requests, so write errors are logged and dropped.

Record fields: ``ts`` (UTC ISO-8601), ``router``, ``decision`` (a :class:`Decision` dump),
``stream``, ``latency_ms`` (to the response, or to the stream's creation), ``usage``
(``prompt_tokens``/``completion_tokens`` when known), ``error`` (set when every tier failed).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class RoutingLog:
    """A thread-safe JSONL file of routing records."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._dir_made = False  # one mkdir, not one per record (a syscall per request)

    def write(
        self,
        decision: dict[str, Any],
        *,
        stream: bool,
        latency_ms: float,
        usage: dict[str, int] | None = None,
        error: str | None = None,
    ) -> None:
        """Append one record; ``decision`` must already be redacted."""
        record = {
            "ts": dt.datetime.now(dt.timezone.utc).isoformat(),
            "router": decision.get("router"),
            "decision": decision,
            "stream": stream,
            "latency_ms": round(latency_ms, 3),
            "usage": usage,
            "error": error,
        }
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        try:
            with self._lock:
                if not self._dir_made:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._dir_made = True
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(line)
        except OSError as exc:
            logger.warning("introroute: cannot write routing log %s: %s", self.path, exc)
