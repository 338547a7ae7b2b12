"""Read and append routing-log JSONL files without ever losing or corrupting a finished record.

Why so careful: labelling runs for hours on a shared CPU and gets killed. Each record is appended
with one ``write`` of a whole line, then flushed and fsynced, so a crash can at worst leave one
partial last line. Readers skip that line with a warning (it was never finished, so resume redoes
it) and writers cut it off before appending, so it can never glue itself to the next record.
Files ending in ``.gz`` (the vendored logs) are read transparently and written reproducibly.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from introroute.data.rawfiles import json_object
from introroute.data.schema import RoutingRecord
from introroute.errors import DataError

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "<record>"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{field}: {first['msg']}{more}"


def parse_record(line: str, where: str) -> RoutingRecord:
    """Parse one JSONL line; ``where`` (``file:line``) prefixes every error message."""
    return parse_model(RoutingRecord, line, where)


def parse_model(model: type[M], line: str, where: str) -> M:
    """One JSONL line as ``model``; ``where`` (``file:line``) prefixes every error message."""
    data = json_object(line, where)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise DataError(f"{where}: {_describe(exc)}") from exc


def open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_records(path: str | os.PathLike[str]) -> Iterator[RoutingRecord]:
    """Yield the records of a JSONL (or JSONL.gz) file in order.

    Blank lines are ignored. A last line without a newline that does not parse is an unfinished
    append: it is skipped with a warning. Any other bad line raises :class:`DataError`.
    """
    return iter_models(RoutingRecord, path)


def iter_models(model: type[M], path: str | os.PathLike[str]) -> Iterator[M]:
    """:func:`iter_records` for any line schema (the router's ``DecisionRecord`` too)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: routing log not found")
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            if line.endswith("\n"):
                yield parse_model(model, line, where)
                continue
            try:  # only the last line can lack its newline
                record = parse_model(model, line, where)
            except DataError:
                log.warning("%s: skipping a truncated last line (an append that never finished)", where)
                return
            yield record


def read_records(path: str | os.PathLike[str]) -> list[RoutingRecord]:
    """All records of a file; see :func:`iter_records`."""
    return list(iter_records(path))


def finished_ids(path: str | os.PathLike[str], target: str | None = None) -> set[str]:
    """Ids already in a log, optionally only those with an outcome for ``target``: what a resumed
    run skips. Empty when the log does not exist yet."""
    if not Path(path).is_file():
        return set()
    return {r.id for r in iter_records(path) if target is None or target in r.outcomes}


def _finish_or_cut_tail(path: Path) -> None:
    """Make the file end at a line end before appending, never losing a record.

    A last line without its newline is either a whole record (a file written by another tool, or
    an append interrupted between the record and its newline): it is kept and the newline added,
    as :func:`iter_records` already counts it; or the start of a record an interrupted append left
    (``{...``): it is cut with a warning. Anything else is not a routing log, and is not touched.
    """
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        keep, chunk = 0, 1 << 16
        for end in range(size, 0, -chunk):
            start = max(0, end - chunk)
            fh.seek(start)
            block = fh.read(end - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
        fh.seek(keep)
        tail = fh.read()
        try:
            parse_record(tail.decode("utf-8"), f"{path}: last line")
        except (DataError, UnicodeDecodeError):
            if not tail.lstrip().startswith(b"{"):
                raise DataError(
                    f"{path}: the last line is not a routing-log record; refusing to append to it"
                ) from None
            log.warning("%s: cutting %d bytes of an unfinished last line before appending", path, size - keep)
            fh.truncate(keep)
        else:
            fh.seek(size)
            fh.write(b"\n")


class RecordAppender:
    """Append records to a JSONL log, one durable line each (``with RecordAppender(p) as out:``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.suffix == ".gz":
            raise DataError(f"{self.path}: cannot append to a gzip file; label into a plain .jsonl")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                _finish_or_cut_tail(self.path)
            self._fh = open(self.path, "ab")  # noqa: SIM115 - closed by close()/__exit__
        except OSError as exc:  # a parent that is a file, a directory in the way, no permission
            raise DataError(f"{self.path}: cannot append to it: {exc.strerror or exc}") from None

    def append(self, record: RoutingRecord) -> None:
        """Write the record as one line with a single write, then flush and fsync it."""
        self._fh.write((record.to_json() + "\n").encode("utf-8"))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RecordAppender:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def write_records(path: str | os.PathLike[str], records: Iterable[RoutingRecord]) -> int:
    """Write a whole log atomically (temp file + rename); ``.gz`` output is byte-reproducible.

    Returns the number of records written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "wb") as raw:
        sink = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if path.suffix == ".gz" else raw
        for record in records:
            sink.write((record.to_json() + "\n").encode("utf-8"))
            count += 1
        if sink is not raw:
            sink.close()
    os.replace(tmp, path)
    return count
