"""Benchmark questions as chat prompts for self-labelling: ARC-Easy/Challenge, BoolQ, MMLU, GSM8K,
EntityQuestions.

Why options are shuffled: SmolLM2-135M-Instruct answers "A" most of the time, so on benchmarks
whose gold is often A its "successes" mostly say where the gold sits. Each item's options are
permuted with an RNG seeded by ``(seed, id)``, so gold letters are uniform in expectation, the
permutation is stable when data grows or a run resumes, and it is recorded (``meta.permutation``:
shown position k holds original option ``permutation[k]``) together with the original gold.
All multiple-choice tasks share one prompt format (:func:`format_mc`).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from introroute.data.graders import LETTERS, Kind, canonical_number, gsm8k_gold
from introroute.data.paths import data_root, require
from introroute.data.rawfiles import csv_rows, jsonl_rows
from introroute.data.schema import RoutingRecord, Split
from introroute.data.short_answer import normalize
from introroute.data.splits import DEFAULT_SEED, assign_split, pick_unseen_subjects, split_of, unit_hash
from introroute.errors import DataError

DATASETS = (
    "arc-easy",
    "arc-challenge",
    "boolq",
    "mmlu",
    "gsm8k",
    "entityquestions",
    "general-qa",
    "country-capitals",
)
MC_INSTRUCTION = "Answer with the letter of the correct option."
YESNO_INSTRUCTION = "Answer yes or no."
GSM8K_INSTRUCTION = (
    "Solve the problem step by step, then give the final answer on its own line as '#### <number>'."
)


@dataclass(frozen=True)
class BenchmarkItem:
    """One question, ready to send: ``messages`` is what the model sees, ``gold`` what grading expects."""

    id: str
    dataset: str
    kind: Kind
    split: Split
    messages: list[dict[str, str]]
    gold: str
    options: tuple[str, ...] = ()
    subject: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def format_mc(question: str, options: Sequence[str], context: str | None = None) -> str:
    """The one multiple-choice format: optional context, question, lettered options, instruction."""
    lines = [context.strip(), ""] if context else []
    lines.append(question.strip())
    lines += [f"{LETTERS[i]}. {opt.strip()}" for i, opt in enumerate(options)]
    lines.append(MC_INSTRUCTION)
    return "\n".join(lines)


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def shuffle_options(
    item_id: str, options: Sequence[str], gold_index: int, seed: int | None
) -> tuple[tuple[str, ...], str, list[int]]:
    """``(shown options, gold letter, permutation)``; ``seed=None`` keeps the original order."""
    order = list(range(len(options)))
    if seed is not None:
        random.Random(f"options:{seed}:{item_id}").shuffle(order)
    return tuple(options[j] for j in order), LETTERS[order.index(gold_index)], order


def _mc_item(
    *,
    item_id: str,
    dataset: str,
    question: str,
    options: Sequence[str],
    gold_index: int,
    split: Split,
    shuffle_seed: int | None,
    subject: str | None = None,
    meta: dict[str, Any] | None = None,
) -> BenchmarkItem:
    shown, gold, order = shuffle_options(item_id, options, gold_index, shuffle_seed)
    return BenchmarkItem(
        id=item_id,
        dataset=dataset,
        kind="mc",
        split=split,
        messages=_user(format_mc(question, shown)),
        gold=gold,
        options=shown,
        subject=subject,
        meta={
            **(meta or {}),
            "n_options": len(shown),
            "permutation": order,
            "original_gold": LETTERS[gold_index],
            "shuffle_seed": shuffle_seed,
        },
    )


def _open_item(
    item_id: str,
    dataset: str,
    kind: Kind,
    text: str,
    gold: str,
    split_seed: int,
    source_split: str = "validation",
) -> BenchmarkItem:
    """A question without options (yes/no, number): one user message, gold as the grader reads it."""
    return BenchmarkItem(
        id=item_id,
        dataset=dataset,
        kind=kind,
        split=split_of(item_id, seed=split_seed),
        messages=_user(text),
        gold=gold,
        meta={"source_split": source_split},
    )


def _field(row: dict[str, Any], key: str, where: str) -> Any:
    try:
        return row[key]
    except (KeyError, TypeError):
        raise DataError(f"{where}: missing field {key!r}") from None


def load_arc(
    variant: str, root: Path | None = None, shuffle_seed: int | None = 0, split_seed: int = DEFAULT_SEED
) -> list[BenchmarkItem]:
    """ARC-Easy (``variant="easy"``) or ARC-Challenge, train and validation files together."""
    name = {"easy": "Easy", "challenge": "Challenge"}[variant]
    dataset = f"arc-{variant}"
    items = []
    for source_split in ("train", "validation"):
        path = data_root(root) / "arc" / f"ARC-{name}-{source_split}.jsonl"
        for where, row in jsonl_rows(path):
            choices = _field(row, "choices", where)
            labels, texts = _field(choices, "label", where), _field(choices, "text", where)
            key = _field(row, "answerKey", where)
            if len(labels) != len(texts) or not 2 <= len(texts) <= len(LETTERS):
                raise DataError(f"{where}: {len(labels)} choice labels for {len(texts)} choice texts")
            if key not in labels:
                raise DataError(f"{where}: answerKey {key!r} not among choice labels {labels}")
            item_id = f"{dataset}/{_field(row, 'id', where)}"
            items.append(
                _mc_item(
                    item_id=item_id,
                    dataset=dataset,
                    question=_field(row, "question", where),
                    options=texts,
                    gold_index=labels.index(key),
                    split=split_of(item_id, seed=split_seed),
                    shuffle_seed=shuffle_seed,
                    meta={"source_split": source_split},
                )
            )
    return items


def mmlu_rows(path: Path) -> Iterator[tuple[str, str, list[str], int]]:
    """``("file:line", question, 4 options, gold index)`` per row of an MMLU subject CSV."""
    columns = ("question", "choice0", "choice1", "choice2", "choice3", "answer")
    for where, row in csv_rows(path, columns):
        try:
            gold = int(row["answer"])
        except ValueError:
            raise DataError(f"{where}: MMLU answer {row['answer']!r} is not an integer") from None
        if not 0 <= gold < 4:
            raise DataError(f"{where}: MMLU answer {gold} is not in 0..3")
        yield where, row["question"], [row[f"choice{i}"] for i in range(4)], gold


def mmlu_subjects(root: Path | None = None) -> list[str]:
    """The subjects that have a test CSV (47 in the shared data)."""
    folder = require(data_root(root) / "mmlu" / "test")
    return sorted(p.name.removesuffix("_test.csv") for p in folder.glob("*_test.csv"))


def mmlu_id(subject: str, row: int) -> str:
    """Shared by the RouteLLM importer, so the same MMLU question has one id (and split) everywhere."""
    return f"mmlu/{subject}/{row}"


def load_mmlu(
    root: Path | None = None, shuffle_seed: int | None = 0, split_seed: int = DEFAULT_SEED
) -> list[BenchmarkItem]:
    """MMLU test rows; held-out subjects get split ``test_unseen``."""
    subjects = mmlu_subjects(root)
    unseen = pick_unseen_subjects(subjects, seed=split_seed)
    items = []
    for subject in subjects:
        path = data_root(root) / "mmlu" / "test" / f"{subject}_test.csv"
        for row, (_, question, options, gold) in enumerate(mmlu_rows(path)):
            item_id = mmlu_id(subject, row)
            items.append(
                _mc_item(
                    item_id=item_id,
                    dataset="mmlu",
                    question=question,
                    options=options,
                    gold_index=gold,
                    split=split_of(item_id, subject, unseen, split_seed),
                    shuffle_seed=shuffle_seed,
                    subject=subject,
                )
            )
    return items


def load_boolq(root: Path | None = None, split_seed: int = DEFAULT_SEED) -> list[BenchmarkItem]:
    """BoolQ dev with passages (the question-only files give the model nothing to read)."""
    path = data_root(root) / "boolq" / "validation_with_passage.jsonl"
    items = []
    for row, (where, data) in enumerate(jsonl_rows(path)):
        template, question = _field(data, "prompt", where), _field(data, "subject", where)
        target = str(_field(_field(data, "target_new", where), "str", where))
        if not template.startswith("passage: ") or "\nquestion: {}" not in template:
            raise DataError(f"{where}: expected prompt 'passage: ...\\nquestion: {{}}'")
        if target not in {"True", "False"}:
            raise DataError(f"{where}: target_new.str is {target!r}, expected True or False")
        passage = template.removeprefix("passage: ").split("\nquestion: {}")[0]
        text = f"{passage.strip()}\n\nQuestion: {question.strip()}?\n{YESNO_INSTRUCTION}"
        gold = "yes" if target == "True" else "no"
        items.append(
            _open_item(f"boolq/validation/{row}", "boolq", "yesno", text, gold, split_seed, "validation")
        )
    return items


def gsm8k_id(source_split: str, row: int) -> str:
    """Shared by the RouteLLM importer (its GSM8K rows are gsm8k/test in order)."""
    return f"gsm8k/{source_split}/{row}"


def load_gsm8k(root: Path | None = None, split_seed: int = DEFAULT_SEED) -> list[BenchmarkItem]:
    """GSM8K test then train; gold is the number after ``####``."""
    items = []
    for source_split in ("test", "train"):
        path = data_root(root) / "gsm8k" / f"{source_split}.jsonl"
        for row, (where, data) in enumerate(jsonl_rows(path)):
            text = f"{_field(data, 'question', where).strip()}\n{GSM8K_INSTRUCTION}"
            gold = gsm8k_gold(_field(data, "answer", where), where)
            item_id = gsm8k_id(source_split, row)
            items.append(_open_item(item_id, "gsm8k", "number", text, gold, split_seed, source_split))
    return items


EQ_UNSEEN_RELATIONS = frozenset({"P131", "P136", "P276"})
"""EntityQuestions relations held out whole as ``test_unseen``: this project's own unseen-relation
test (the dataset's test split and relations P176/P495 are kept back by the data's provider)."""


def _eq_entity(template: str, question: str) -> str | None:
    """The ``[X]`` of a relation's question template, read back from one question."""
    head, _, tail = template.partition("[X]")
    if question.startswith(head) and question.endswith(tail) and len(question) > len(head) + len(tail):
        return question[len(head) : len(question) - len(tail)]
    return None


def load_entityquestions(
    root: Path | None = None,
    split_seed: int = DEFAULT_SEED,
    relations: Sequence[str] | None = None,
    unseen: frozenset[str] = EQ_UNSEEN_RELATIONS,
) -> list[BenchmarkItem]:
    """EntityQuestions train + dev questions, as a user would type them (no instruction added).

    Splits are by entity (every question about one entity lands in one split, across relations),
    and the ``unseen`` relations are ``test_unseen`` whole. ``options`` holds every gold alias.
    """
    folder = data_root(root) / "entityquestions"
    templates = json.loads(require(folder / "relation_query_templates.json").read_text(encoding="utf-8"))
    available = sorted(p.name.split(".")[0] for p in require(folder / "train").glob("*.train.json"))
    wanted = list(relations) if relations else available
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise DataError(f"EntityQuestions has no relation {', '.join(missing)}; have {', '.join(available)}")
    items = []
    for relation in wanted:
        for source_split in ("train", "dev"):
            path = require(folder / source_split / f"{relation}.{source_split}.json")
            for row, data in enumerate(json.loads(path.read_text(encoding="utf-8"))):
                where = f"{path}:{row}"
                question = str(_field(data, "question", where)).strip()
                aliases = tuple(str(a) for a in _field(data, "answers", where))
                if not aliases:
                    raise DataError(f"{where}: no gold answers")
                entity = _eq_entity(templates[relation], question)
                key = normalize(entity or question)
                split = "test_unseen" if relation in unseen else assign_split(f"entity:{key}", split_seed)
                items.append(
                    BenchmarkItem(
                        id=f"entityquestions/{relation}/{source_split}/{row}",
                        dataset="entityquestions",
                        kind="short",
                        split=split,
                        messages=_user(question),
                        gold=aliases[0],
                        options=aliases,
                        subject=relation,
                        meta={"source_split": source_split, "entity": entity, "answers": list(aliases)},
                    )
                )
    return items


GENERAL_QA_MMLU_SKIP = frozenset(
    {
        "abstract_algebra", "college_computer_science", "college_mathematics", "college_physics",
        "econometrics", "formal_logic", "high_school_computer_science", "high_school_mathematics",
        "high_school_microeconomics", "high_school_statistics", "international_law", "jurisprudence",
        "machine_learning", "moral_scenarios", "professional_accounting", "professional_law",
    }
)  # fmt: skip
"""MMLU subjects left out of ``general-qa``: their answers are computed or argued, not recalled."""
_NEEDS_OPTIONS = re.compile(
    r"\b(which of|the following|these|this|that|shown|diagram|above|below|best|most likely|least|true|"
    r"false|not|except|all of|explain|why|example|would|could|should|might|statement|graph|table|"
    r"passage|experiment|students?|investigation)\b",
    re.IGNORECASE,
)
"""Words of a question that only makes sense next to its options, or has no single short answer."""
_NO_SINGLE_ANSWER = re.compile(r"\b(all|none|both|neither)\b", re.IGNORECASE)


def open_question(question: str, answer: str) -> bool:
    """Whether a multiple-choice item still asks one short factual question without its options:
    a question of at most 120 characters that names no option, with a gold option of at most 3 words."""
    question = question.strip()
    return (
        question.endswith("?")
        and len(question) <= 120
        and not _NEEDS_OPTIONS.search(question)
        and len(answer.split()) <= 3
        and not _NO_SINGLE_ANSWER.search(answer)
    )


def load_general_qa(root: Path | None = None, split_seed: int = DEFAULT_SEED) -> list[BenchmarkItem]:
    """General factual questions asked as a user would ask them: ARC-Easy/Challenge and MMLU
    (recall subjects) items that :func:`open_question` keeps, asked without options, graded as a
    short answer against the gold option's text.

    Why: the `self` head was trained on EntityQuestions' templated questions; a router's traffic
    ("What is the capital of Bhutan?", "Who wrote Pride and Prejudice?") is open questions of any
    shape, and a threshold fitted only on the templates is overconfident there. Nothing here is
    trained on, so the split is half ``validation`` (fit a threshold) and half ``test`` (report).
    """
    sources = load_arc("easy", root, None, split_seed) + load_arc("challenge", root, None, split_seed)
    sources += [i for i in load_mmlu(root, None, split_seed) if i.subject not in GENERAL_QA_MMLU_SKIP]
    items = []
    for item in sources:
        question = item.messages[0]["content"].split("\n")[0]
        answer = item.options[LETTERS.index(item.gold)]
        if not open_question(question, answer):
            continue
        meta = {
            "source_split": item.meta.get("source_split", "test"),  # MMLU rows: its test CSVs
            "answers": [answer],
            "from": item.dataset,
        }
        items.append(
            _halves(
                item,
                "general-qa",
                split_seed,
                kind="short",
                messages=_user(question),
                gold=answer,
                options=(answer,),
                subject=item.subject or item.dataset,
                meta=meta,
            )
        )
    return items


def _halves(item: BenchmarkItem, dataset: str, split_seed: int, **changes: Any) -> BenchmarkItem:
    """``item`` as an item of ``dataset``, in the seeded half ``validation`` or ``test``: for
    sets that only measure (nothing trained on), so a threshold is fitted on one half, reported
    on the other."""
    item_id = f"{dataset}/{item.id}"
    split: Split = "validation" if unit_hash(split_seed, f"general:{item_id}") < 0.5 else "test"
    return replace(item, id=item_id, dataset=dataset, split=split, **changes)


def load_country_capitals(
    root: Path | None = None, split_seed: int = DEFAULT_SEED, trained: frozenset[str] = frozenset()
) -> list[BenchmarkItem]:
    """EntityQuestions' "What is the capital of [X]?" (P36) where X is a country (an answer of
    P17, "Which country is [X] located in?", given at least 3 times): the common-facts end of a
    relation the `self` head was trained on, where SmolLM2 is mostly right and wrong answers
    ("Lumbak" for Bhutan) score high. ``trained``: ids the head was trained on, left out."""
    items = load_entityquestions(root, split_seed, ["P17", "P36"])
    named = Counter(item.gold for item in items if item.subject == "P17")
    countries = {country for country, n in named.items() if n >= 3}
    return [
        _halves(item, "country-capitals", split_seed)
        for item in items
        if item.subject == "P36" and item.meta["entity"] in countries and item.id not in trained
    ]


def load_benchmark(
    name: str, root: Path | None = None, shuffle_seed: int | None = 0, split_seed: int = DEFAULT_SEED
) -> list[BenchmarkItem]:
    """Items of one of :data:`DATASETS`; ``shuffle_seed`` only matters for multiple choice."""
    loaders: dict[str, Callable[[], list[BenchmarkItem]]] = {
        "arc-easy": lambda: load_arc("easy", root, shuffle_seed, split_seed),
        "arc-challenge": lambda: load_arc("challenge", root, shuffle_seed, split_seed),
        "boolq": lambda: load_boolq(root, split_seed),
        "mmlu": lambda: load_mmlu(root, shuffle_seed, split_seed),
        "gsm8k": lambda: load_gsm8k(root, split_seed),
        "entityquestions": lambda: load_entityquestions(root, split_seed),
        "general-qa": lambda: load_general_qa(root, split_seed),
        "country-capitals": lambda: load_country_capitals(root, split_seed, _trained_ids()),
    }
    if name not in loaders:
        raise DataError(f"unknown benchmark {name!r}; expected one of {', '.join(DATASETS)}")
    return loaders[name]()


def _trained_ids() -> frozenset[str]:
    """Ids of the vendored EntityQuestions labels' train split: the packaged `self` head saw them."""
    from introroute.data.records import load_log

    return frozenset(r.id for r in load_log("self_smollm2_entityquestions") if r.split == "train")


_OPTION_LINE = re.compile(r"^([A-J])[.)]\s+(.*)$")


def items_from_records(records: Sequence[RoutingRecord]) -> list[BenchmarkItem]:
    """Routing-log records as items to answer, with the messages exactly as the log has them.

    Why: a multi-tier log needs the local model's outcome on the *same* prompt the other tiers
    saw (RouteLLM's MMLU prompt, original option order), not on a re-formatted question. The task
    kind follows the gold answer (a letter, yes/no, or a number), or is ``short`` when the record
    carries ``meta.answers`` (gold aliases, as ``introroute label`` writes for factual QA; the
    question's ``meta.entity`` is kept for the grader); options are read back from ``A. ...``
    lines of the last user message so the option-text grader still works.
    """
    items = []
    for record in records:
        gold = record.gold
        if gold is None:
            raise DataError(f"record {record.id!r} has no gold answer to grade against")
        last_user = next((m.content for m in reversed(record.messages) if m.role == "user"), "")
        options = tuple(m[2] for m in map(_OPTION_LINE.match, last_user.splitlines()) if m)
        aliases = record.meta.get("answers")
        if record.meta.get("kind") == "short" or aliases:  # factual QA: graded against gold aliases
            kind, options = "short", tuple(aliases or (gold,))
        elif gold in LETTERS:
            kind: Kind = "mc"
        elif gold in ("yes", "no"):
            kind = "yesno"
        elif canonical_number(gold) is not None:
            kind, gold = "number", canonical_number(gold)  # the grader compares canonical numbers
        else:
            raise DataError(f"record {record.id!r}: cannot tell the task kind from gold {gold!r}")
        items.append(
            BenchmarkItem(
                id=record.id,
                dataset=record.dataset,
                kind=kind,
                split=record.split,
                messages=[m.model_dump() for m in record.messages],
                gold=gold,
                options=options if kind in ("mc", "short") else (),
                subject=record.subject,
                meta={
                    "labelled_from": record.meta.get("source", "log"),
                    **{k: record.meta[k] for k in ("entity", "answers") if k in record.meta},
                },
            )
        )
    return items
