"""Rows of the raw public files (CSV, JSONL), each with the ``file:line`` it starts on.

Why: every error about a public file must point at the offending line, and multi-line CSV cells
(RouteLLM prompts span several lines) make the csv module's own line counter point at the end.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from introroute.data.paths import require
from introroute.errors import DataError

csv.field_size_limit(1 << 24)  # RouterBench cells hold whole few-shot prompts and code answers


def csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[str, dict[str, str]]]:
    """``("file:line", row)`` per CSV record; a missing ``required`` column is a DataError."""
    with open(require(path), encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}:1: missing column(s) {missing}; header is {reader.fieldnames}")
        start = reader.line_num + 1
        for row in reader:
            if None in row or None in row.values():
                raise DataError(
                    f"{path}:{start}: {len(row)} cells, header has {len(reader.fieldnames or [])}"
                )
            yield f"{path}:{start}", row
            start = reader.line_num + 1


def json_object(line: str, where: str) -> dict[str, Any]:
    """Parse one line that must hold a JSON object; ``where`` (``file:line``) prefixes errors."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(data).__name__}")
    return data


def jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("file:line", object)`` for each non-blank line of a JSONL file."""
    with open(require(path), encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            yield where, json_object(line, where)
