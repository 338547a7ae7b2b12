"""The factual short-answer grader on replies a small model really writes, and EntityQuestions items."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_support import write_entityquestions

from introroute.data.benchmarks import load_entityquestions
from introroute.data.graders import grade
from introroute.data.short_answer import match_alias, normalize
from introroute.errors import DataError


@pytest.mark.parametrize(
    ("reply", "aliases", "subject", "expected"),
    [
        ("The capital of France is Paris.", ["Paris"], "France", "paris"),
        ("paris", ["Paris"], None, "paris"),
        ("Brasília", ["Brasilia"], None, "brasilia"),  # accents folded both ways
        ("The capital of Brazil is Brasilia.", ["Brasília"], "Brazil", "brasilia"),
        ("Paris, France", ["Paris"], None, "paris"),
        ("It is the city of New York City.", ["New York", "New York City"], None, "new york city"),
        ("No, it is Paris.", ["Paris"], None, "paris"),
        ("The answer is the Netherlands", ["Netherlands"], None, "netherlands"),
        ("He plays as a goalkeeper", ["goalkeeper"], None, "goalkeeper"),
        ("Wexford", ["Wexford"], "County Wexford", "wexford"),
        ("The capital of Kassel is Kassel, Germany.", ["Kassel"], "Kassel", "kassel"),
        # wrong or unreadable
        ("Paris or Lyon", ["Paris"], None, None),
        ("Either Paris or Lyon.", ["Paris"], None, None),
        ("Lyon, Paris, Marseille", ["Paris"], None, None),
        ("- Paris\n- Lyon", ["Paris"], None, None),
        ("1. Paris\n2. Lyon", ["Paris"], None, None),
        ("not Paris", ["Paris"], None, None),
        ("It isn't Paris.", ["Paris"], None, None),
        ("The capital is not in Paris", ["Paris"], None, None),
        ("Parisian cafés", ["Paris"], None, None),  # whole words only
        ("The capital of County Wexford is Enniscorthy.", ["Wexford"], "County Wexford", None),  # echo
        ("", ["Paris"], None, None),
        ("I don't know.", ["Paris"], None, None),
    ],
)
def test_match_alias(reply: str, aliases: list[str], subject: str | None, expected: str | None) -> None:
    assert match_alias(reply, aliases, subject) == expected


def test_normalize_is_squad_style_with_accents_folded() -> None:
    assert normalize("  The Café, São-Paulo!  ") == "cafe sao paulo"
    assert normalize("An apple's core") == "apple s core"


def test_grade_short_kind_uses_every_alias() -> None:
    result = grade("short", "It was written in English.", "English language", ("English language", "English"))
    assert result.correct and result.parsed == "english"
    assert not grade("short", "French", "English", ("English",)).correct


def test_entityquestions_items_split_by_entity_and_hold_out_relations(tmp_path: Path) -> None:
    items = load_entityquestions(write_entityquestions(tmp_path), unseen=frozenset({"P276"}))
    assert len(items) == 12  # 6 rows of 3 relations, train and dev
    france = [i for i in items if i.meta["entity"] == "France"]
    assert len({i.split for i in france}) == 1  # one entity, one split (train and dev copies)
    assert {i.split for i in items if i.subject == "P276"} == {"test_unseen"}
    first = items[0]
    assert first.kind == "short" and [m["role"] for m in first.messages] == ["user"]
    assert first.messages[0]["content"].endswith("?")  # as a user types it: no instruction added
    assert load_entityquestions(tmp_path, relations=["P36"])[0].subject == "P36"
    with pytest.raises(DataError, match="no relation P999"):
        load_entityquestions(tmp_path, relations=["P999"])
