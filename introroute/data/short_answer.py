"""Short-answer grading for factual QA (EntityQuestions): is a gold alias the one answer given?

Why so strict: a `self` label is what the gatekeeper learns to predict, and a grader that calls
"Paris or Lyon" or "not Paris" right teaches it that hedging is knowing. Normalisation follows
SQuAD (case, punctuation, articles, whitespace) and also folds accents, so "Brasília" matches
"Brasilia". A reply is right when a normalised gold alias occurs in it as whole words, is not
negated ("not Paris", "isn't Paris"), and the reply does not offer several candidates ("Paris or
Lyon", a bulleted list, "Lyon, Paris, Marseille"). Words that merely echo the question's subject
("The capital of County Wexford is ..." for the gold "Wexford") are removed before matching, once:
"The capital of Kassel is Kassel" still answers "Kassel".
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NEGATIONS = frozenset({"not", "no", "never", "neither", "nor", "t"})
"""After normalisation "isn't" is "isn t": a bare "t" before the alias is a contracted "not"."""
_BULLET_LINE = re.compile(r"(?m)^\s*(?:[-*•]|\d+[.)])\s+\S")
_ALTERNATIVE = re.compile(r"\b(or|either)\b")
_NEGATION_WINDOW = 2
"""Words before an alias searched for a negation: "not Paris", "not in Paris" (but "No, it is Paris")."""


def normalize(text: str) -> str:
    """SQuAD-style normalisation with accents folded: lower case, no punctuation or articles."""
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch)).lower()
    folded = re.sub(r"[^\w\s]", " ", folded.replace("'", " "))
    folded = _ARTICLES.sub(" ", folded)
    return " ".join(folded.split())


def _word_spans(haystack: str, needle: str) -> list[tuple[int, int]]:
    """Whole-word occurrences of ``needle`` in ``haystack`` (both normalised)."""
    if not needle:
        return []
    return [m.span() for m in re.finditer(rf"(?<!\w){re.escape(needle)}(?!\w)", haystack)]


def _candidates(reply: str) -> int:
    """How many alternative answers the reply offers: bullets, "or", a comma list of 3 or more."""
    bullets = len(_BULLET_LINE.findall(reply))
    if bullets >= 2:
        return bullets
    first_sentence = re.split(r"(?<=[.!?])\s+|\n", reply.strip(), maxsplit=1)[0]
    if _ALTERNATIVE.search(normalize(first_sentence)):
        return 2
    parts = [p for p in re.split(r"[,;]", first_sentence) if p.strip()]
    short_parts = [p for p in parts if len(p.split()) <= 3]
    return len(parts) if len(parts) >= 3 and len(short_parts) == len(parts) else 1


def _without_subject(reply: str, subject: str | None) -> str:
    """The normalised reply with its first echo of the question's subject blanked out.

    Only the first: "The capital of Kassel is Kassel" restates the subject once, then answers.
    """
    spans = _word_spans(reply, normalize(subject)) if subject else []
    if not spans:
        return reply
    start, end = spans[0]
    return f"{reply[:start]} | {reply[end:]}"


def match_alias(reply: str, aliases: Sequence[str], subject: str | None = None) -> str | None:
    """The first gold alias the reply gives as its one, non-negated answer; None when it gives none.

    ``subject`` is the entity the question asks about: its echo in the reply is not an answer.
    """
    if not reply.strip() or _candidates(reply) > 1:
        return None
    norm = _without_subject(normalize(reply), subject)
    # longest alias first, so "New York City" is reported rather than "New York"
    for alias in sorted({normalize(a) for a in aliases if normalize(a)}, key=len, reverse=True):
        for start, _ in _word_spans(norm, alias):
            if not _NEGATIONS.intersection(norm[:start].split()[-_NEGATION_WINDOW:]):
                return alias
    return None
