"""Benchmark loaders on a miniature data folder: prompt format, recorded shuffles, typed errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from introroute.data.benchmarks import (
    DATASETS,
    MC_INSTRUCTION,
    format_mc,
    load_benchmark,
    shuffle_options,
)
from introroute.data.graders import LETTERS
from introroute.errors import DataError


def test_every_loader_produces_valid_items(synthetic_data: Path) -> None:
    for name in DATASETS:
        items = load_benchmark(name)
        assert items, name
        assert len({i.id for i in items}) == len(items)
        for item in items:
            assert item.dataset == name
            assert item.messages[-1]["role"] == "user"
            assert item.split in {"train", "validation", "test", "test_unseen"}


def test_mc_prompt_format_and_recorded_permutation(synthetic_data: Path) -> None:
    item = next(i for i in load_benchmark("arc-easy", shuffle_seed=3) if len(i.options) == 4)
    original = ["ice", "fire", "snow", "rain"]
    perm = item.meta["permutation"]
    assert list(item.options) == [original[j] for j in perm]
    assert item.options[LETTERS.index(item.gold)] == "fire"
    assert item.meta["original_gold"] == "B"
    text = item.messages[0]["content"]
    assert text == format_mc("Which is hot?", item.options)
    assert text.endswith(MC_INSTRUCTION) and "\nA. " in text and "\nD. " in text


def test_numeric_arc_labels_and_no_shuffle(synthetic_data: Path) -> None:
    item = next(i for i in load_benchmark("arc-challenge", shuffle_seed=None) if len(i.options) == 3)
    assert item.options == ("1", "2", "3") and item.gold == "B"
    assert item.meta["permutation"] == [0, 1, 2]


def test_shuffle_balances_gold_positions() -> None:
    golds = Counter(shuffle_options(f"q/{i}", ["a", "b", "c", "d"], 0, seed=0)[1] for i in range(4000))
    assert set(golds) == set("ABCD")
    assert all(abs(n / 4000 - 0.25) < 0.03 for n in golds.values())
    assert shuffle_options("q/1", ["a", "b", "c", "d"], 0, 0) == shuffle_options(
        "q/1", ["a", "b", "c", "d"], 0, 0
    )


def test_mmlu_unseen_subject_and_shared_ids(synthetic_data: Path) -> None:
    items = load_benchmark("mmlu")
    assert {i.subject for i in items} == {"astronomy", "virology"}
    assert items[0].id == "mmlu/astronomy/0"
    by_subject = {i.subject: i.split for i in items if i.split == "test_unseen"}
    assert len(by_subject) <= 2


def test_boolq_and_gsm8k_formats(synthetic_data: Path) -> None:
    boolq = load_benchmark("boolq")
    assert [i.gold for i in boolq] == ["yes", "no"]
    assert boolq[0].messages[0]["content"].startswith("Paris is in France.\n\nQuestion: is paris in france?")
    gsm = load_benchmark("gsm8k")
    assert [i.id for i in gsm] == ["gsm8k/test/0", "gsm8k/test/1", "gsm8k/train/0"]
    assert [i.gold for i in gsm] == ["7", "1200", "7"]
    assert "####" in gsm[0].messages[0]["content"]


def test_bad_rows_name_file_and_line(synthetic_data: Path) -> None:
    path = synthetic_data / "arc" / "ARC-Easy-validation.jsonl"
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1].replace('"answerKey": "2"', '"answerKey": "9"') + "\n")
    with pytest.raises(DataError, match=r"ARC-Easy-validation\.jsonl:2: answerKey '9'"):
        load_benchmark("arc-easy")
    mmlu = synthetic_data / "mmlu" / "test" / "virology_test.csv"
    mmlu.write_text("question,answer\nq,1\n")
    with pytest.raises(DataError, match=r"virology_test\.csv:1: missing column\(s\) \['choice0'"):
        load_benchmark("mmlu")
    mmlu.write_text("question,choice0,choice1,choice2,choice3,answer\nq,a,b,c,d,1\nq,a,b,c,d,7\n")
    with pytest.raises(DataError, match=r"virology_test\.csv:3: MMLU answer 7"):
        load_benchmark("mmlu")


def test_unknown_benchmark_and_missing_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="unknown benchmark"):
        load_benchmark("hellaswag")
    monkeypatch.setenv("INTROROUTE_DATA", str(tmp_path / "absent"))
    with pytest.raises(DataError, match="INTROROUTE_DATA"):
        load_benchmark("boolq")
