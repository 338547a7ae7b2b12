"""The record schema and crash-safe JSONL logs: typed errors, truncated tails, resume, gzip."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from introroute.data.jsonl import RecordAppender, finished_ids, read_records, write_records
from introroute.data.schema import RoutingRecord, TargetOutcome
from introroute.errors import DataError


def make_record(i: int, target: str = "self", correct: bool | None = True) -> RoutingRecord:
    return RoutingRecord(
        id=f"toy/{i}",
        dataset="toy",
        split="train",
        messages=[{"role": "user", "content": f"question {i}?"}],
        outcomes={target: TargetOutcome(model="m", correct=correct, cost_usd=0.001)},
        gold="A",
    )


def test_round_trip_keeps_unknowns_unknown(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with RecordAppender(path) as out:
        out.append(make_record(0, correct=None))
        out.append(make_record(1))
    first, second = read_records(path)
    assert first.outcomes["self"].correct is None  # missing stays missing, not False
    assert second == make_record(1)
    assert "null" not in path.read_text()  # None fields are left out of the file


def test_schema_forbids_unknown_fields() -> None:
    with pytest.raises(ValueError, match="extra"):
        TargetOutcome(model="m", corect=True)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"id": "x"}', "dataset: Field required"),
        (
            '{"id": "x", "dataset": "d", "split": "train", "messages": [{"role": "user", "content": "q"}],'
            ' "outcomes": {"self": {"model": "m", "correct": "maybe"}}}',
            "outcomes.self.correct",
        ),
        (
            '{"id": "x", "dataset": "d", "split": "holdout", "messages": [{"role": "user", "content": "q"}],'
            ' "outcomes": {}}',
            "split",
        ),
    ],
)
def test_bad_line_names_file_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(make_record(0).to_json() + "\n\n" + line + "\n" + make_record(1).to_json() + "\n")
    with pytest.raises(DataError, match=rf"bad\.jsonl:3: .*{message}"):
        read_records(path)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_records(tmp_path / "nope.jsonl")
    assert finished_ids(tmp_path / "nope.jsonl") == set()


def test_truncated_last_line_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "log.jsonl"
    full = make_record(1).to_json()
    path.write_text(make_record(0).to_json() + "\n" + full[: len(full) // 2])
    with caplog.at_level(logging.WARNING):
        assert [r.id for r in read_records(path)] == ["toy/0"]
    assert "log.jsonl:2" in caplog.text and "truncated" in caplog.text


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(make_record(0).to_json())
    assert [r.id for r in read_records(path)] == ["toy/0"]


def test_appending_after_a_crash_cuts_the_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    full = make_record(1).to_json()
    path.write_text(make_record(0).to_json() + "\n" + full[:40])  # a crash mid-append
    with RecordAppender(path) as out:
        out.append(make_record(2))
    assert [r.id for r in read_records(path)] == ["toy/0", "toy/2"]
    path.write_text(full[:40])  # the only line is partial
    with RecordAppender(path) as out:
        out.append(make_record(3))
    assert [r.id for r in read_records(path)] == ["toy/3"]


def test_appending_keeps_a_whole_last_record_that_lacks_its_newline(tmp_path: Path) -> None:
    """Counted as done by a resumed run, so it must stay: 4 records + 1 appended = 5, in order."""
    path = tmp_path / "log.jsonl"
    lines = [make_record(i).to_json() for i in range(4)]
    path.write_text("\n".join(lines))  # no newline after the 4th
    assert finished_ids(path) == {f"toy/{i}" for i in range(4)}
    with RecordAppender(path) as out:
        out.append(make_record(4))
    assert [r.id for r in read_records(path)] == [f"toy/{i}" for i in range(5)]
    path.write_text(make_record(9).to_json())  # a one-line file without a newline
    with RecordAppender(path) as out:
        out.append(make_record(10))
    assert [r.id for r in read_records(path)] == ["toy/9", "toy/10"]
    path.write_text("some notes, not a log")  # not ours to truncate
    with pytest.raises(DataError, match="not a routing-log record; refusing"):
        RecordAppender(path)
    assert path.read_text() == "some notes, not a log"
    with pytest.raises(DataError, match="cannot append to it"):
        RecordAppender(path / "labels.jsonl")  # a parent that is a file: typed, not NotADirectoryError


def test_finished_ids_by_target(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with RecordAppender(path) as out:
        out.append(make_record(0, target="self"))
        out.append(make_record(1, target="gpt-4"))
    assert finished_ids(path) == {"toy/0", "toy/1"}
    assert finished_ids(path, "self") == {"toy/0"}


def test_gzip_write_is_reproducible_and_readable(tmp_path: Path) -> None:
    records = [make_record(i) for i in range(5)]
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    assert write_records(a, records) == 5
    write_records(b, records)
    assert a.read_bytes() == b.read_bytes()
    assert read_records(a) == records
    assert json.loads(gzip.decompress(a.read_bytes()).splitlines()[0])["id"] == "toy/0"
    with pytest.raises(DataError, match="gzip"):
        RecordAppender(a)
