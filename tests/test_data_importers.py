"""Importers on a miniature copy of the public logs (real layout and column names)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from data_support import GPT4, MIXTRAL

from introroute.data import import_command
from introroute.data.importers import import_routellm_gsm8k, import_routellm_mmlu, import_routerbench
from introroute.data.jsonl import read_records
from introroute.errors import DataError


def test_routellm_mmlu_join(synthetic_data: Path) -> None:
    records = import_routellm_mmlu()
    assert [r.id for r in records[:2]] == ["mmlu/astronomy/0", "mmlu/astronomy/1"]
    first = records[0]
    assert first.subject == "astronomy" and first.gold == "B"
    assert "D. nan" in first.messages[0].content  # the prompt as RouteLLM sent it
    assert first.outcomes[MIXTRAL].correct is True and first.outcomes[MIXTRAL].model == MIXTRAL
    assert records[1].outcomes[MIXTRAL].correct is False
    assert all(r.outcomes[GPT4].correct for r in records)


def test_routellm_mmlu_misalignment_is_an_error(synthetic_data: Path) -> None:
    path = synthetic_data / "mmlu" / "test" / "astronomy_test.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[2], lines[1], lines[3]]) + "\n")  # rows swapped
    with pytest.raises(DataError, match=r"mmlu_astronomy\.csv:2: prompt does not match"):
        import_routellm_mmlu()


def test_routellm_gsm8k(synthetic_data: Path) -> None:
    records = import_routellm_gsm8k()
    assert [r.id for r in records] == ["gsm8k/test/0", "gsm8k/test/1"]
    assert records[0].gold == "7" and records[1].gold == "1200"
    assert records[0].outcomes[MIXTRAL].response == "7\n#### 7"
    assert records[0].outcomes[GPT4].correct is False
    assert [r.meta["contaminated"] for r in records] == [False, True]


def test_routerbench_merges_duplicate_rows_and_keeps_missing(synthetic_data: Path) -> None:
    records = {r.id: r for r in import_routerbench()}
    assert set(records) == {"routerbench/arc-challenge.val.1", "routerbench/arc-challenge.val.2"}
    merged = records["routerbench/arc-challenge.val.1"]
    assert merged.dataset == "routerbench/arc-challenge"
    assert merged.meta["rows"] == [0, 1]
    assert merged.messages[0].content.startswith("Which is hot?")
    gpt4 = merged.outcomes["gpt-4-1106-preview"]
    assert (gpt4.correct, gpt4.response, gpt4.cost_usd) == (True, "B", 0.005)  # the single-prompt row
    assert merged.outcomes["claude-v2"].correct is False  # only the doubled row has claude's cell
    other = records["routerbench/arc-challenge.val.2"]
    assert other.outcomes["claude-v2"].cost_usd is None  # empty cell = unknown
    assert other.outcomes["gpt-4-1106-preview"].response == "A\n"


def test_routerbench_bad_cell_names_file_line_and_column(synthetic_data: Path) -> None:
    path = synthetic_data / "routerbench" / "arc_challenge_train.csv"
    path.write_text(path.read_text().replace(",1.0,1.0,", ",1.0,maybe,"))
    with pytest.raises(DataError, match=r"arc_challenge_train\.csv:4: column 'claude-v2' is 'maybe'"):
        import_routerbench()


def test_import_command_writes_vendored_style_files(synthetic_data: Path, tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    import_command.add_arguments(parser)
    assert import_command.main(parser.parse_args(["--out-dir", str(tmp_path / "out")])) == 0
    assert len(read_records(tmp_path / "out" / "routerbench.jsonl.gz")) == 2
    assert len(read_records(tmp_path / "out" / "routellm_mmlu.jsonl.gz")) == 5
    assert "acc 0.600" in capsys.readouterr().out  # Mixtral: right on 3 of the 5 MMLU rows
