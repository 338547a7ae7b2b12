"""Turn a model's free-text answer into a label: which answer it gave, and whether it was right.

Why rule graders are strict: a label that says "correct" because the grader guessed is worse than
no label. A reply that cannot be read as one answer (empty, an echo of every option, two letters
without an explicit "the answer is") parses to ``None`` and grades as wrong, since the target did
not answer well, while ``parsed=None`` keeps it countable as "unparsed" in the label summary.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import litellm

from introroute.data.short_answer import match_alias
from introroute.errors import DataError

Kind = Literal["mc", "yesno", "number", "short"]
"""``short``: a factual short answer, graded against gold aliases (:mod:`introroute.data.short_answer`)."""
LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Grade:
    """``parsed`` is the answer read from the reply (None: unreadable); ``correct`` compares it to gold."""

    parsed: str | None
    correct: bool


# ---------------------------------------------------------------------------------------------
# Multiple choice


def _letters(n_options: int) -> str:
    return LETTERS[: max(2, min(n_options, len(LETTERS)))]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


_EXPLICIT = (
    r"\banswer\b(?:\s+(?:is|would be|should be|will be))?\s*[:\-]?\s*\(?([{letters}])\b",
    r"\b(?:correct|right|best)\s+(?:option|choice|letter)\s+(?:is\s+)?\(?([{letters}])\b",
)


def _explicit_letter(text: str, letters: str) -> str | None:
    """ "The answer is B, not C" / "Answer: (C)" / "The correct option is D": the first such phrase.

    The letter must be upper case, so "the answer is a guess" does not read as option A.
    """
    for pattern in _EXPLICIT:
        for match in re.finditer(pattern.format(letters=letters), text, flags=re.IGNORECASE):
            if match.group(1).isupper():
                return match.group(1)
    return None


def _option_markers(text: str, letters: str) -> list[str]:
    """Letters that start a line as an option label (``A.``, ``B)``, ``(C)``): an echoed option list."""
    return re.findall(rf"(?m)^\s*\(?([{letters}])[.):]", text)


def _leading_letter(text: str, letters: str) -> str | None:
    """ "B", "B.", "B) Paris", "(B) Paris", "B: Paris": a reply that starts with the letter."""
    bare = re.fullmatch(rf"\s*\(?([{letters.lower()}])[.)]?\s*", text)
    if bare:  # a lone lower-case letter is a letter answer too
        return bare.group(1).upper()
    match = re.match(rf"\s*\(?([{letters}])(?:[.):,]|\s|$)", text)
    if not match:
        return None
    # "A cat..." starts with the article, not option A: require punctuation or a short reply.
    rest = text[match.end() :].strip()
    if match.group(0).strip() == match.group(1) and len(rest.split()) > 3 and not rest[:1].isupper():
        return None
    return match.group(1)


def _marked_letters(text: str, letters: str) -> set[str]:
    """Letters written as labels anywhere: "(C)", "C)", "option C" but not the article "A"."""
    found = set(re.findall(rf"\(([{letters}])\)|\b([{letters}])\)", text))
    return {a or b for a, b in found}


def _option_text_match(text: str, options: Sequence[str], letters: str) -> str | None:
    """The one option whose text the reply contains; None when none or several do."""
    reply = f" {_norm(text)} "
    hits = [i for i, opt in enumerate(options) if _norm(opt) and f" {_norm(opt)} " in reply]
    # "Paris, Texas" also contains "Paris": keep only hits not contained in another hit.
    hits = [i for i in hits if not any(j != i and _norm(options[i]) in _norm(options[j]) for j in hits)]
    return letters[hits[0]] if len(hits) == 1 else None


def parse_choice(text: str, options: Sequence[str] = ()) -> str | None:
    """The option letter a reply picks, or None when it picks none or several.

    Order: an explicit "answer is X" phrase; an echo of two or more options is unreadable; a
    reply starting with a letter (unless it labels another letter too); exactly one letter
    written as a label; exactly one option's text.
    """
    letters = _letters(len(options) if options else 4)
    if not text or not text.strip():
        return None
    explicit = _explicit_letter(text, letters)
    if explicit:
        return explicit
    if len(set(_option_markers(text, letters))) >= 2:
        return None
    marked = _marked_letters(text, letters)
    leading = _leading_letter(text, letters)
    if leading:
        return leading if marked <= {leading} else None  # "(A) or (B)" picks nothing
    if len(marked) == 1:
        return marked.pop()
    if marked:
        return None
    return _option_text_match(text, options, letters) if options else None


# ---------------------------------------------------------------------------------------------
# Yes / no

_YES = {"yes", "true", "correct"}
_NO = {"no", "false", "incorrect"}


def _yes_no_word(word: str) -> str | None:
    return "yes" if word in _YES else "no" if word in _NO else None


def parse_yes_no(text: str) -> str | None:
    """``"yes"``/``"no"`` from "Yes.", "No, because...", "The answer is true"; None if both or neither."""
    lowered = text.lower()
    explicit = re.search(r"\banswer\b(?:\s+is)?\s*[:\-]?\s*(yes|no|true|false)\b", lowered)
    if explicit:
        return _yes_no_word(explicit.group(1))
    first = re.match(r"\W*(\w+)", lowered)
    if first and _yes_no_word(first.group(1)):
        return _yes_no_word(first.group(1))
    said = {_yes_no_word(w) for w in re.findall(r"\b(yes|no|true|false)\b", lowered)}
    return said.pop() if len(said) == 1 else None


# ---------------------------------------------------------------------------------------------
# Final number (GSM8K)

_NUMBER = r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"


def canonical_number(text: str) -> str | None:
    """``"$1,080.00"`` -> ``"1080"``; None when the text is not a number."""
    cleaned = text.replace("$", "").replace(",", "").replace(" ", "").rstrip(".%")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    normal = value.normalize()
    return format(normal.quantize(Decimal(1)) if normal == normal.to_integral() else normal, "f")


def parse_final_number(text: str) -> str | None:
    """The final answer of a worked solution: "#### N", else "answer is N", else \\boxed{N}, else the
    last number in the text. Commas, "$" and trailing zeros are normalised away."""
    for pattern in (
        rf"####\s*({_NUMBER})",
        rf"answer\s*(?:is|:)?\s*[:=]?\s*({_NUMBER})",
        rf"\\boxed\{{\s*({_NUMBER})\s*\}}",
    ):
        found = re.findall(pattern, text, flags=re.IGNORECASE)
        if found:
            return canonical_number(found[-1])
    numbers = re.findall(_NUMBER, text)
    return canonical_number(numbers[-1]) if numbers else None


def gsm8k_gold(answer: str, where: str) -> str:
    """The gold number of a GSM8K ``answer`` field (the text after ``####``)."""
    if "####" not in answer:
        raise DataError(f"{where}: GSM8K answer has no '#### N' final line")
    gold = canonical_number(answer.rsplit("####", 1)[1].strip())
    if gold is None:
        raise DataError(
            f"{where}: GSM8K final answer {answer.rsplit('####', 1)[1].strip()!r} is not a number"
        )
    return gold


# ---------------------------------------------------------------------------------------------
# Dispatch and LLM judge


def grade(
    kind: Kind, response: str, gold: str, options: Sequence[str] = (), subject: str | None = None
) -> Grade:
    """Rule-grade a reply of the given task kind against its gold answer.

    For ``short``, ``options`` are the gold's aliases and ``subject`` the entity asked about.
    """
    if kind == "short":
        parsed = match_alias(response, (gold, *options), subject)
        return Grade(parsed=parsed, correct=parsed is not None)
    if kind == "mc":
        parsed = parse_choice(response, options)
    elif kind == "yesno":
        parsed = parse_yes_no(response)
    elif kind == "number":
        parsed = parse_final_number(response)
    else:
        raise ValueError(f"unknown task kind {kind!r}; expected 'mc', 'yesno', 'number' or 'short'")
    return Grade(parsed=parsed, correct=parsed is not None and parsed == gold)


JUDGE_PROMPT = (
    "You grade answers. Question:\n{question}\n\nReference answer: {gold}\n\nCandidate answer:\n"
    "{response}\n\nIs the candidate's final answer the same as the reference? Reply with exactly one "
    "word: CORRECT or INCORRECT."
)
JUDGE_ALONE_PROMPT = (
    "You grade answers. Question:\n{question}\n\nCandidate answer:\n{response}\n\nIs the candidate's "
    "final answer correct? Reply with exactly one word: CORRECT or INCORRECT."
)


def judge_with_llm(
    question: str, response: str, gold: str | None, model: str, **completion_kwargs: Any
) -> Grade:
    """Ask an LLM (any LiteLLM model string) whether ``response`` matches ``gold``.

    For answers rules cannot read (free-form text). Without ``gold`` (live traffic that no
    reference model answered) the judge grades the answer on its own knowledge. ``parsed`` is
    the judge's verdict word, None when the judge replied something else; extra kwargs
    (``api_base``, ``mock_response``) go to ``litellm.completion``.
    """
    template = JUDGE_ALONE_PROMPT if gold is None else JUDGE_PROMPT
    prompt = template.format(question=question, gold=gold, response=response or "(empty)")
    reply = litellm.completion(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        temperature=0.0,
        max_tokens=5,
        **completion_kwargs,
    )
    words = re.findall(r"[A-Z]+", (reply.choices[0].message.content or "").upper())
    verdict = words[0] if words and words[0] in {"CORRECT", "INCORRECT"} else None
    return Grade(parsed=verdict, correct=verdict == "CORRECT")
