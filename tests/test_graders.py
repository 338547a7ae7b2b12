"""Rule graders on the replies small models really produce, and the LLM judge through LiteLLM."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from introroute.data.graders import (
    LETTERS,
    canonical_number,
    grade,
    gsm8k_gold,
    judge_with_llm,
    parse_choice,
    parse_final_number,
    parse_yes_no,
)
from introroute.errors import DataError

OPTIONS = ["London", "Paris", "Berlin", "Rome"]
ECHO = "A. London\nB. Paris\nC. Berlin\nD. Rome"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("The answer is B, not C", "B"),
        ("B) Paris", "B"),
        ("B", "B"),
        ("b", "B"),
        ("(C)", "C"),
        ("C.", "C"),
        ("Answer: D", "D"),
        ("answer: (A)", "A"),
        ("The correct option is D because Rome is the capital.", "D"),
        ("Option A is wrong; the answer is B", "B"),
        ("I think it's (D) Rome", "D"),
        ("D\n\nExplanation: Rome is the capital of Italy.", "D"),
        ("Paris", "B"),
        ("It is Berlin.", "C"),
        (ECHO + "\nAnswer: B", "B"),
        (ECHO, None),
        ("", None),
        ("   \n", None),
        ("London or Paris", None),
        ("A cat is a small animal that likes milk", None),
        ("the answer is a guess", None),
        ("(A) or (B)", None),
        ("E", None),  # not an option of a 4-option question
    ],
)
def test_parse_choice_tricky_replies(reply: str, expected: str | None) -> None:
    assert parse_choice(reply, OPTIONS) == expected


def test_option_text_prefers_the_longer_contained_option() -> None:
    options = ["Paris", "Paris, Texas", "Lyon"]
    assert parse_choice("Paris, Texas", options) == "B"
    assert parse_choice("Paris", options) == "A"


def test_letters_follow_option_count() -> None:
    assert parse_choice("E", [*OPTIONS, "Madrid"]) == "E"
    assert parse_choice("C", ["yes", "no"]) is None


@given(
    options=st.lists(st.text(alphabet="abcdefghij ", min_size=1, max_size=12), min_size=2, max_size=5),
    data=st.data(),
)
def test_letter_with_option_text_reads_as_that_letter(options: list[str], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(options) - 1))
    assert parse_choice(f"{LETTERS[index]}) {options[index]}", options) == LETTERS[index]
    assert parse_choice(f"The answer is {LETTERS[index]}.", options) == LETTERS[index]


@given(st.lists(st.text(alphabet="abcdefghij", min_size=1, max_size=8), min_size=2, max_size=5, unique=True))
def test_echo_of_all_options_is_unparseable(options: list[str]) -> None:
    echo = "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(options))
    assert parse_choice(echo, options) is None


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Yes.", "yes"),
        ("no", "no"),
        ("No, because ice is cold.", "no"),
        ("The answer is true", "yes"),
        ("Answer: False", "no"),
        ("I would say no", "no"),
        ("Well, yes and no", None),
        ("maybe", None),
        ("", None),
    ],
)
def test_parse_yes_no(reply: str, expected: str | None) -> None:
    assert parse_yes_no(reply) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("3 + 4 = 7\n#### 7", "7"),
        ("#### 1,080", "1080"),
        ("So she makes $18 every day.", "18"),
        ("The answer is $1,234.50.", "1234.5"),
        ("\\boxed{42}", "42"),
        ("It drops to -3 degrees", "-3"),
        ("18.00", "18"),
        ("#### 5\nWait, actually 7", "5"),
        ("The answer is 12. Check: 6 + 6 = 12 and 3 * 4", "12"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_parse_final_number(reply: str, expected: str | None) -> None:
    assert parse_final_number(reply) == expected


@given(st.integers(-(10**9), 10**9))
def test_number_formats_round_trip(n: int) -> None:
    for text in (f"#### {n:,}", f"The answer is {n}.", f"Total: ${n:,}" if n >= 0 else f"Total: {n}"):
        assert parse_final_number(text) == str(n)


@given(st.decimals(min_value=-1000, max_value=1000, places=2, allow_nan=False))
def test_canonical_number_equal_values_equal_strings(value) -> None:
    assert canonical_number(f"{value}") == canonical_number(f"{value}0")


def test_gsm8k_gold() -> None:
    assert gsm8k_gold("work...\n#### 1,200", "f:1") == "1200"
    with pytest.raises(DataError, match="f:3"):
        gsm8k_gold("no final line", "f:3")
    with pytest.raises(DataError, match="not a number"):
        gsm8k_gold("#### twelve", "f:4")


def test_grade_dispatch() -> None:
    assert grade("mc", "B) Paris", "B", OPTIONS).correct
    assert not grade("mc", ECHO, "A", OPTIONS).correct
    assert grade("mc", ECHO, "A", OPTIONS).parsed is None
    assert grade("yesno", "Yes", "yes").correct
    assert grade("number", "#### 1,080", "1080").correct
    with pytest.raises(ValueError, match="unknown task kind"):
        grade("essay", "x", "y")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("judge_reply", "parsed", "correct"),
    [("CORRECT", "CORRECT", True), ("Incorrect.", "INCORRECT", False), ("I cannot tell", None, False)],
)
def test_llm_judge_with_mock_response(judge_reply: str, parsed: str | None, correct: bool) -> None:
    result = judge_with_llm("2+2?", "four", "4", "openai/gpt-4o-mini", mock_response=judge_reply)
    assert (result.parsed, result.correct) == (parsed, correct)
