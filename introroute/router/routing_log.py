"""Append one JSON line per routed request: the decision, timing, usage and outcome.

Why a log of its own: routing quality is judged offline (how often did the cheap tier answer,
what did it cost, would another threshold have done better), and policies can be replayed over
these records. Records carry no message text unless ``log_prompts`` is on (privacy) and pass
through the router's redactor (secrets). A failing disk must not fail requests, so write errors
are logged and dropped; but a path that cannot be written at all is a :class:`ConfigError`
when the router is built, not a warning per request.

Every line is strict JSON (``allow_nan=False``): a non-finite number anywhere in a record is
written as ``null`` and listed in ``nonfinite``, and a record that cannot be serialised at all
is replaced by one that says so, so each routed call still leaves exactly one parseable line.

Each line is a :class:`introroute.decision_log.DecisionRecord` (typed and versioned; its fields
are described there): ``id`` (a hash of the prompt), ``ts``, ``router``, ``decision``, ``target``,
``stream``, ``latency_ms``, ``usage``, ``error`` (set when no tier answered: every tier failed, no
tier could read the request, or the call was cancelled), and with ``log_prompts`` the prompt and
answer text; ``outcome`` is a slot for the user's own grade and ``audit`` holds the reference
tier's answer of an audited request.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any

from introroute.errors import ConfigError

logger = logging.getLogger(__name__)


class RoutingLog:
    """A thread-safe JSONL file of routing records."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        check_writable(self.path)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (a :class:`DecisionRecord` dump, already redacted). Never raises."""
        try:
            line = _dumps(record)
        except Exception as exc:  # nothing about one record may cost the caller its answer
            line = _dumps(
                {
                    "version": record.get("version"),
                    "id": record.get("id"),
                    "ts": record.get("ts"),
                    "router": record.get("router"),
                    "decision": None,
                    "error": record.get("error"),
                    "log_error": f"record not serialisable: {type(exc).__name__}",
                }
            )
        # A lone surrogate (from a provider's error text) cannot be UTF-8: replace, don't fail.
        data = (line + "\n").encode("utf-8", "replace")
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("ab") as f:
                    f.write(data)
        except Exception as exc:
            logger.warning("introroute: cannot write routing log %s: %s", self.path, exc)


def _dumps(record: dict[str, Any]) -> str:
    try:
        return json.dumps(record, ensure_ascii=False, allow_nan=False, default=str)
    except ValueError:  # NaN or an infinity somewhere: strict JSON has no spelling for them
        paths: list[str] = []
        clean = _finite(record, "", paths)
        clean["nonfinite"] = paths
        return json.dumps(clean, ensure_ascii=False, allow_nan=False, default=str)


def _finite(value: Any, path: str, paths: list[str]) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        paths.append(path or ".")
        return None
    if isinstance(value, dict):
        return {k: _finite(v, f"{path}.{k}", paths) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v, f"{path}[{i}]", paths) for i, v in enumerate(value)]
    return value


def check_writable(path: Path) -> None:
    """Raise :class:`ConfigError` unless records can be appended to ``path`` (nothing is created).

    Why at build time: an unwritable log used to drop every record with a warning per request.
    """
    where = f"routing_log: {path}"
    if path.exists():
        if not path.is_file():
            raise ConfigError(f"{where}: not a regular file")
        try:
            with path.open("ab"):
                pass
        except OSError as exc:
            raise ConfigError(f"{where}: cannot append: {exc.strerror or exc}") from None
        return
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{where}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: cannot create files in {parent}")
