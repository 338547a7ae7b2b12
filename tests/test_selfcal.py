"""Issue 20 item 3: the general-question set, short-answer logs, and the per-source `self` fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from introroute.data.benchmarks import items_from_records, load_benchmark, open_question
from introroute.data.schema import Message, RoutingRecord
from introroute.errors import DataError
from introroute.fitting import selfcal


def test_general_qa_asks_recall_questions_without_their_options(synthetic_data: Path) -> None:
    items = load_benchmark("general-qa")
    hot = [i for i in items if i.messages[0]["content"] == "Which is hot?"]
    assert hot and all(i.kind == "short" and i.gold == "fire" and i.options == ("fire",) for i in hot)
    assert {i.split for i in items} <= {"validation", "test"}  # nothing here is trained on
    assert all(i.id.startswith("general-qa/") for i in items)
    assert not any("Pick two" in i.messages[0]["content"] for i in items)  # no question mark
    assert open_question("What is the capital of Bhutan?", "Thimphu")
    assert not open_question("Which of the following is a gas?", "oxygen")
    assert not open_question("What is hot?", "all of the above")


def test_country_capitals_are_capitals_of_named_countries(synthetic_data: Path) -> None:
    items = load_benchmark("country-capitals")
    assert {i.messages[0]["content"] for i in items} == {
        "What is the capital of France?"
    }  # Japan: named twice
    assert all(i.id.startswith("country-capitals/entityquestions/P36/") for i in items)
    assert {i.split for i in items} <= {"validation", "test"} and items[0].options == ("Paris",)


def test_a_short_answer_log_is_labelled_against_its_aliases() -> None:
    record = RoutingRecord(
        id="probe/1",
        dataset="probe",
        split="test",
        messages=[Message(role="user", content="What is the capital of China?")],
        outcomes={},
        gold="Beijing",
        meta={"entity": "China", "answers": ["Beijing", "Peking"], "kind": "short"},
    )
    (item,) = items_from_records([record])
    assert (item.kind, item.options, item.meta["entity"]) == ("short", ("Beijing", "Peking"), "China")


def test_lowest_tau_keeps_ties_together_and_rounds_up() -> None:
    p = np.array([0.9, 0.8, 0.8, 0.5, 0.1])
    y = np.array([1, 1, 0, 0, 0])
    assert selfcal.lowest_tau(p, y, 0.8) == 0.8  # 1 wrong of 5 kept; 0.5 would keep 2
    assert selfcal.lowest_tau(p, y, 0.9) == 0.9  # the right 0.8 is not kept without its wrong twin
    assert selfcal.lowest_tau(p, y, 0.6) == 0.5
    assert selfcal.lowest_tau(np.array([0.42]), np.array([0]), 0.99) == 1.0
    assert selfcal.lowest_tau(np.array([0.4201]), np.array([1]), 0.99) == 0.421


def _rows(path: Path, dataset: str, split: str, p: np.ndarray, y: np.ndarray) -> None:
    with path.open("a") as handle:
        for i, (score, label) in enumerate(zip(p, y, strict=True)):
            row = {"id": f"{dataset}/{split}/{i}", "dataset": dataset, "split": split}
            row |= {"labels": {"self": label}, "scores": {"s": {"self": score}}}
            handle.write(json.dumps(row) + "\n")


def test_fit_holds_on_every_source_and_reports_held_out_bounds(tmp_path: Path) -> None:
    """A source where high scores are often wrong raises the threshold for all (rule 'every')."""
    rng = np.random.default_rng(0)
    preds = tmp_path / "predictions.jsonl"
    for split in ("validation", "test"):
        p = rng.uniform(size=400)
        _rows(preds, "honest", split, p, (rng.uniform(size=400) < p).astype(float))
        q = rng.uniform(size=400)
        _rows(preds, "overconfident", split, q, (rng.uniform(size=400) < q / 4).astype(float))
    rows = selfcal.read_rows([preds], "s", "self")
    result = selfcal.fit(rows, 0.95, ["validation"], ["test"])
    taus = result["tau_per_source"]
    assert result["tau"] == max(taus.values()) == taus["overconfident"] > taus["honest"]
    assert result["tau_pooled"] <= result["tau"]
    for source in ("honest", "overconfident"):
        assert result["fit"][source]["met"]
        cell = result["held_out"][source]
        lo, hi = cell["reliability"]["ci95"]
        assert lo <= cell["reliability"]["value"] <= hi and cell["n"] == 400
    pooled = selfcal.fit(rows, 0.95, ["validation"], ["test"], rule="pooled")
    assert pooled["tau"] == result["tau_pooled"]
    given = selfcal.fit(rows, 0.95, ["validation"], ["test"], tau=0.0)  # keeps everything local
    assert given["rule"] == "given" and given["held_out"]["honest"]["kept_local"]["value"] == 1.0
    assert "| overconfident | 400 |" in selfcal.markdown(result)


def test_read_rows_names_a_missing_scorer(tmp_path: Path) -> None:
    preds = tmp_path / "p.jsonl"
    _rows(preds, "d", "test", np.array([0.5]), np.array([1.0]))
    with pytest.raises(DataError, match="'nope'"):
        selfcal.read_rows([preds], "nope", "self")
