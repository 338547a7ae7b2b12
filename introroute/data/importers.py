"""Import real outcomes of real LLMs from public routing logs into :class:`RoutingRecord`.

Sources (see ``vendored/ATTRIBUTION.md``): RouteLLM's per-prompt correctness of Mixtral-8x7B and
GPT-4-1106 on MMLU and GSM8K, and RouterBench's zero-shot subset (11 models with responses and
costs). Messages are the prompt exactly as the logged models received it, as one user message,
so a gatekeeper learns from what the target really saw. An empty cell means "not logged"
(``correct=None``), never a failure. Target names are the logs' model names.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from introroute.data.benchmarks import gsm8k_id, mmlu_id, mmlu_rows
from introroute.data.graders import LETTERS, gsm8k_gold
from introroute.data.paths import data_root, require
from introroute.data.rawfiles import csv_rows, jsonl_rows
from introroute.data.schema import Message, RoutingRecord, TargetOutcome
from introroute.data.splits import DEFAULT_SEED, pick_unseen_subjects, split_of
from introroute.errors import DataError

RESPONSE_SUFFIX = "_response"  # RouteLLM GSM8K: "<model>_response"
RB_RESPONSE, RB_COST = "|model_response", "|total_cost"  # RouterBench: "<model>|model_response"
RB_COLUMNS = ("", "sample_id", "prompt", "eval_name")  # "": the unnamed index of the original table


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _bool_cell(value: str, where: str, column: str) -> bool | None:
    """RouteLLM writes ``True``/``False``, RouterBench ``1.0``/``0.0``; empty means not logged."""
    cell = value.strip()
    if cell == "":
        return None
    if cell in {"True", "1.0", "1"}:
        return True
    if cell in {"False", "0.0", "0"}:
        return False
    raise DataError(f"{where}: column {column!r} is {cell!r}, expected True/False or 1.0/0.0")


def _float_cell(value: str, where: str, column: str) -> float | None:
    if value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise DataError(f"{where}: column {column!r} is {value!r}, expected a number") from None


def _int_cell(value: str, where: str, column: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{where}: column {column!r} is {value!r}, expected an integer") from None


def _user(text: str) -> list[Message]:
    return [Message(role="user", content=text)]


# ---------------------------------------------------------------------------------------------
# RouteLLM


def import_routellm_mmlu(root: Path | None = None, seed: int = DEFAULT_SEED) -> list[RoutingRecord]:
    """RouteLLM MMLU outcomes joined row by row with ``mmlu/test`` for subject and gold letter.

    Each log row must start with its MMLU question (after whitespace normalisation): a shifted
    file would silently attach outcomes to the wrong questions, so a mismatch is a DataError.
    """
    root = data_root(root)
    folder = require(root / "routellm_evals" / "mmlu" / "responses")
    subjects = sorted(p.stem.removeprefix("mmlu_") for p in folder.glob("mmlu_*.csv"))
    unseen = pick_unseen_subjects(subjects, seed=seed)
    records = []
    for subject in subjects:
        log_rows = list(csv_rows(folder / f"mmlu_{subject}.csv", ("prompt",)))
        mmlu = list(mmlu_rows(root / "mmlu" / "test" / f"{subject}_test.csv"))
        if len(log_rows) != len(mmlu):
            raise DataError(
                f"{folder / f'mmlu_{subject}.csv'}: {len(log_rows)} rows but mmlu/test has {len(mmlu)}"
            )
        for row, ((where, logged), (_, question, _, gold)) in enumerate(zip(log_rows, mmlu, strict=True)):
            prompt = logged["prompt"]
            if not _norm(prompt).startswith(_norm(question)):
                raise DataError(f"{where}: prompt does not match mmlu/test/{subject}_test.csv row {row + 1}")
            models = [c for c in logged if c != "prompt"]
            outcomes = {m: TargetOutcome(model=m, correct=_bool_cell(logged[m], where, m)) for m in models}
            record_id = mmlu_id(subject, row)
            records.append(
                RoutingRecord(
                    id=record_id,
                    dataset="mmlu",
                    subject=subject,
                    split=split_of(record_id, subject, unseen, seed),
                    messages=_user(prompt),
                    outcomes=outcomes,
                    gold=LETTERS[gold],
                    meta={"source": "routellm"},
                )
            )
    return records


def import_routellm_gsm8k(root: Path | None = None, seed: int = DEFAULT_SEED) -> list[RoutingRecord]:
    """RouteLLM GSM8K outcomes with both models' responses; rows are ``gsm8k/test`` in order.

    Prompts RouteLLM found contaminated (near-duplicates in its router training data) are kept
    and flagged ``meta.contaminated`` rather than dropped, so ids stay aligned with gsm8k/test.
    """
    root = data_root(root)
    folder = root / "routellm_evals" / "gsm8k"
    contaminated_path = folder / "contaminated_prompts.jsonl"
    contaminated = set()
    if contaminated_path.is_file():
        contaminated = {_norm(str(row.get("eval_prompt", ""))) for _, row in jsonl_rows(contaminated_path)}
    tests = list(jsonl_rows(root / "gsm8k" / "test.jsonl"))
    records = []
    for row, (where, logged) in enumerate(csv_rows(folder / "gsm8k_responses.csv", ("prompt",))):
        if row >= len(tests) or _norm(logged["prompt"]) != _norm(str(tests[row][1].get("question"))):
            raise DataError(f"{where}: prompt does not match gsm8k/test.jsonl line {row + 1}")
        models = [c for c in logged if c != "prompt" and not c.endswith(RESPONSE_SUFFIX)]
        outcomes = {
            m: TargetOutcome(
                model=m,
                correct=_bool_cell(logged[m], where, m),
                response=logged.get(m + RESPONSE_SUFFIX) or None,
            )
            for m in models
        }
        record_id = gsm8k_id("test", row)
        records.append(
            RoutingRecord(
                id=record_id,
                dataset="gsm8k",
                split=split_of(record_id, seed=seed),
                messages=_user(logged["prompt"]),
                outcomes=outcomes,
                gold=gsm8k_gold(str(tests[row][1].get("answer", "")), tests[row][0]),
                meta={"source": "routellm", "contaminated": _norm(logged["prompt"]) in contaminated},
            )
        )
    return records


# ---------------------------------------------------------------------------------------------
# RouterBench


def _python_list_cell(value: str, where: str, column: str) -> list[str]:
    """RouterBench stores prompts and responses as Python list literals: ``"['text']"``."""
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise DataError(f"{where}: column {column!r} is not a Python list literal") from None
    if not isinstance(parsed, list) or not parsed or not all(isinstance(x, str) for x in parsed):
        raise DataError(f"{where}: column {column!r} should be a non-empty list of strings")
    return parsed


def _routerbench_outcome(row: dict[str, str], model: str, where: str) -> TargetOutcome:
    response = row.get(model + RB_RESPONSE, "")
    return TargetOutcome(
        model=model,
        correct=_bool_cell(row[model], where, model),
        response=_python_list_cell(response, where, model + RB_RESPONSE)[0] if response.strip() else None,
        cost_usd=_float_cell(row.get(model + RB_COST, ""), where, model + RB_COST),
    )


def import_routerbench_file(path: Path, seed: int = DEFAULT_SEED) -> list[RoutingRecord]:
    """One RouterBench CSV. Rows sharing a ``sample_id`` are merged.

    The ARC-Challenge file has rows whose prompt was sent twice (a two-element prompt list,
    double cost) with most models' cells empty, mostly repeating a normal row's ``sample_id``.
    For each model the outcome comes from the first row, single-prompt rows first, whose
    correctness cell is filled; ``meta.rows`` lists the source rows (the unnamed index column).
    """
    by_id: dict[str, list[tuple[str, dict[str, str], list[str]]]] = {}
    models: list[str] = []
    for where, row in csv_rows(path, RB_COLUMNS):
        if not models:
            models = [c.removesuffix(RB_RESPONSE) for c in row if c.endswith(RB_RESPONSE)]
            if not models or any(m not in row for m in models):
                raise DataError(f"{path}:1: need a '<model>' column for every '<model>{RB_RESPONSE}' column")
        prompts = _python_list_cell(row["prompt"], where, "prompt")
        if len(set(prompts)) != 1:
            raise DataError(f"{where}: prompt list holds {len(set(prompts))} different prompts")
        by_id.setdefault(row["sample_id"], []).append((where, row, prompts))
    records = []
    for sample_id, rows in by_id.items():
        rows.sort(key=lambda r: len(r[2]))
        outcomes = {}
        for model in models:
            filled = [r for r in rows if r[1][model].strip()] or rows[:1]
            outcomes[model] = _routerbench_outcome(filled[0][1], model, filled[0][0])
        first = rows[0][1]
        record_id = f"routerbench/{sample_id}"
        records.append(
            RoutingRecord(
                id=record_id,
                dataset=f"routerbench/{first['eval_name']}",
                split=split_of(record_id, seed=seed),
                messages=_user(rows[0][2][0]),
                outcomes=outcomes,
                meta={"source": "routerbench", "rows": sorted(_int_cell(r[1][""], r[0], "") for r in rows)},
            )
        )
    return records


def import_routerbench(root: Path | None = None, seed: int = DEFAULT_SEED) -> list[RoutingRecord]:
    """Every CSV under ``routerbench/`` (ARC-Challenge, Winogrande, MBPP train subsets)."""
    folder = require(data_root(root) / "routerbench")
    files = sorted(folder.glob("*.csv"))
    if not files:
        raise DataError(f"{folder}: no RouterBench CSV files")
    return [record for path in files for record in import_routerbench_file(path, seed)]


IMPORTERS = {
    "routellm_mmlu": import_routellm_mmlu,
    "routellm_gsm8k": import_routellm_gsm8k,
    "routerbench": import_routerbench,
}
"""Source name -> importer; the name is also the vendored file's stem."""
