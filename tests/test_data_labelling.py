"""The label pipeline: answerers (tiny HF model, LiteLLM mock), grading, resume, summary verdicts."""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from introroute.data import label_command
from introroute.data.benchmarks import BenchmarkItem, format_mc, items_from_records, shuffle_options
from introroute.data.graders import LETTERS
from introroute.data.jsonl import read_records, write_records
from introroute.data.labelling import (
    Answer,
    HFAnswerer,
    LiteLLMAnswerer,
    label,
    llm_judge_grader,
    write_summary,
)
from introroute.data.records import load_logs, select
from introroute.data.schema import Message, RoutingRecord, TargetOutcome
from introroute.errors import DataError


def mc_items(n: int, seed: int | None = 0) -> list[BenchmarkItem]:
    items = []
    for i in range(n):
        options, gold, perm = shuffle_options(f"toy/{i}", ["w", "x", "y", "z"], 0, seed)
        items.append(
            BenchmarkItem(
                id=f"toy/{i}",
                dataset="toy",
                kind="mc",
                split="train",
                messages=[{"role": "user", "content": format_mc(f"question {i}", options)}],
                gold=gold,
                options=options,
                meta={"n_options": 4, "permutation": perm},
            )
        )
    return items


def always(letter: str):
    def answer(batch: Sequence[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
        return [f"{letter})"] * len(batch)

    return answer


def oracle(items: list[BenchmarkItem], wrong_every: int = 4):
    """Right except on every ``wrong_every``-th question: labels that carry real signal."""
    gold = {item.messages[0]["content"]: (i, item.gold) for i, item in enumerate(items)}

    def answer(batch: Sequence[list[dict[str, str]]], max_new_tokens: int) -> list[Answer]:
        out = []
        for messages in batch:
            i, letter = gold[messages[0]["content"]]
            wrong = LETTERS[(LETTERS.index(letter) + 1) % 4]
            out.append(Answer(text=wrong if i % wrong_every == 0 else letter, completion_tokens=1))
        return out

    return answer


def test_label_appends_graded_records(tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    items = mc_items(10)
    assert label(items, always("A"), out, model_name="toy-model", batch_size=4, progress=False) == 10
    records = read_records(out)
    assert [r.id for r in records] == [i.id for i in items]
    for record, item in zip(records, items, strict=True):
        outcome = record.outcomes["self"]
        assert outcome.model == "toy-model" and outcome.parsed == "A"
        assert outcome.correct == (item.gold == "A")
        assert record.meta["kind"] == "mc" and record.meta["permutation"] == item.meta["permutation"]


def test_resume_skips_finished_ids_and_survives_a_crash(tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    items = mc_items(9)
    calls: list[int] = []

    def flaky(batch: Sequence[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
        calls.append(len(batch))
        if len(calls) == 2:
            raise ConnectionError("provider down")
        return ["B"] * len(batch)

    with pytest.raises(ConnectionError):
        label(items, flaky, out, model_name="m", batch_size=3, progress=False)
    assert len(read_records(out)) == 3  # the first batch was kept
    assert label(items, flaky, out, model_name="m", batch_size=3, progress=False) == 6
    assert len(read_records(out)) == 9 and len({r.id for r in read_records(out)}) == 9
    assert label(items, always("B"), out, target="other", model_name="m", progress=False) == 9


def test_summary_flags_answer_bias_and_recognises_signal(tmp_path: Path) -> None:
    items = mc_items(400)
    biased, good = tmp_path / "biased.jsonl", tmp_path / "good.jsonl"
    label(items, always("A"), biased, model_name="m", batch_size=50, progress=False)
    label(items, oracle(items), good, model_name="m", batch_size=50, progress=False)
    task = write_summary(biased, "self")["tasks"]["toy"]
    assert task["modal_answer"] == "A" and task["modal_answer_share"] == 1.0
    assert task["accuracy"] == pytest.approx(task["constant_baseline"])
    assert task["accuracy_when_gold_is_not_modal"] == 0.0
    assert task["verdict"] == "no_signal"
    assert set(task["gold_distribution"]) == set("ABCD")
    assert write_summary(good, "self")["tasks"]["toy"]["verdict"] == "signal"
    saved = json.loads(Path(f"{good}.summary.json").read_text())
    assert saved["tasks"]["toy"]["accuracy"] == pytest.approx(0.75)


def test_summary_too_lopsided(tmp_path: Path) -> None:
    items = mc_items(40)
    label(items, oracle(items, wrong_every=1000), tmp_path / "l.jsonl", model_name="m", progress=False)
    assert write_summary(tmp_path / "l.jsonl", "self")["tasks"]["toy"]["verdict"] == "too_lopsided"


def test_hf_answerer_batched_equals_one_by_one(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    answerer = HFAnswerer(model, tokenizer)
    conversations = [
        [{"role": "user", "content": "what is the capital of france ?"}],
        [{"role": "user", "content": "yes"}],
        [{"role": "user", "content": "solve the problem step by step then give the final number 7"}],
    ]
    batched = answerer(conversations, max_new_tokens=4)
    single = [answerer([c], max_new_tokens=4)[0] for c in conversations]
    assert [a.text for a in batched] == [a.text for a in single]
    assert [a.prompt_tokens for a in batched] == [a.prompt_tokens for a in single]
    assert all(0 < a.completion_tokens <= 4 for a in batched)
    assert tokenizer.padding_side == "right"  # never modified


def test_label_with_tiny_model_end_to_end(tiny_lm, tmp_path: Path) -> None:
    model, tokenizer = tiny_lm
    out = tmp_path / "self.jsonl"
    label(mc_items(3), HFAnswerer(model, tokenizer), out, model_name="tiny", max_new_tokens=3, progress=False)
    records = read_records(out)
    assert len(records) == 3
    assert all(r.outcomes["self"].correct is not None and r.outcomes["self"].latency_s > 0 for r in records)


def test_litellm_answerer_and_judge_with_mock(tmp_path: Path) -> None:
    answerer = LiteLLMAnswerer("openai/gpt-4o-mini", mock_response="The answer is C")
    out = tmp_path / "remote.jsonl"
    items = mc_items(2)
    judge = llm_judge_grader("openai/gpt-4o-mini", mock_response="CORRECT")
    label(items, answerer, out, target="openai/gpt-4o-mini", model_name="openai/gpt-4o-mini", progress=False)
    label(items, answerer, out, target="judged", model_name="x", grader=judge, progress=False)
    records = read_records(out)
    remote = records[0].outcomes["openai/gpt-4o-mini"]
    assert remote.parsed == "C" and remote.response == "The answer is C"
    assert remote.prompt_tokens is not None and remote.completion_tokens is not None
    assert records[-1].outcomes["judged"].correct is True


def test_label_command_main(synthetic_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(
        label_command, "LiteLLMAnswerer", functools.partial(LiteLLMAnswerer, mock_response="B")
    )
    parser = argparse.ArgumentParser()
    label_command.add_arguments(parser)
    out = tmp_path / "l.jsonl"
    argv = "--backend litellm --model openai/m --datasets arc-easy boolq --limit 3 --no-progress --out"
    args = parser.parse_args([*argv.split(), str(out)])
    assert label_command.main(args) == 0
    records = read_records(out)
    assert len(records) == 5  # 3 ARC-Easy + both BoolQ items
    assert all("openai/m" in r.outcomes for r in records)
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    assert set(summary["tasks"]) == {"arc-easy", "boolq"}
    assert "arc-easy" in capsys.readouterr().out
    assert label_command.main(args) == 0  # resumed: nothing new
    assert len(read_records(out)) == 5


def _log_record(record_id: str, split: str, gold: str, outcomes: dict | None = None) -> RoutingRecord:
    prompt = f"Question {record_id}?\nA. alpha\nB. beta\nC. gamma\nD. delta\nAnswer:"
    return RoutingRecord(
        id=record_id,
        dataset="mmlu",
        subject="toy",
        split=split,
        messages=[Message(role="user", content=prompt)],
        outcomes=outcomes or {"remote": TargetOutcome(model="remote", correct=True)},
        gold=gold,
    )


def test_label_from_a_log_answers_its_messages_and_merges_back(tmp_path: Path, monkeypatch) -> None:
    """`label --log`: the same prompts the log's targets saw, the same subset train/eval select."""
    log = tmp_path / "log.jsonl"
    records = [_log_record(f"q/{i}", "train" if i < 6 else "test", "B") for i in range(8)]
    write_records(log, records)
    items = items_from_records(records)
    assert items[0].kind == "mc" and items[0].options == ("alpha", "beta", "gamma", "delta")
    assert items[0].messages == [m.model_dump() for m in records[0].messages]

    monkeypatch.setattr(
        label_command, "LiteLLMAnswerer", functools.partial(LiteLLMAnswerer, mock_response="B) beta")
    )
    parser = argparse.ArgumentParser()
    label_command.add_arguments(parser)
    out = tmp_path / "self.jsonl"
    argv = ["--backend", "litellm", "--model", "openai/m", "--target", "self", "--log", str(log)]
    args = parser.parse_args([*argv, "--splits", "train", "--limit", "4", "--no-progress", "--out", str(out)])
    assert label_command.main(args) == 0
    labelled = read_records(out)
    assert {r.id for r in labelled} == {r.id for r in select(records, ["train"], 4, 0)}
    assert all(r.outcomes["self"].correct for r in labelled)

    merged = load_logs([str(log), str(out)])
    assert [r.id for r in merged] == [r.id for r in records]  # first log's order: select() agrees
    both = [r for r in merged if "self" in r.outcomes]
    assert len(both) == 4 and all("remote" in r.outcomes for r in both)


def test_merging_logs_refuses_conflicts(tmp_path: Path) -> None:
    first, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_records(first, [_log_record("q/1", "train", "A")])
    write_records(other, [_log_record("q/1", "train", "A")])
    with pytest.raises(DataError, match=r"repeats outcome\(s\) \['remote'\]"):
        load_logs([str(first), str(other)])
    changed = _log_record("q/1", "train", "A", {"self": TargetOutcome(model="m", correct=False)})
    changed.messages[0].content += " (edited)"
    write_records(other, [changed])
    with pytest.raises(DataError, match="other messages"):
        load_logs([str(first), str(other)])


def test_items_from_records_needs_a_gradable_gold() -> None:
    with pytest.raises(DataError, match="no gold"):
        items_from_records([_log_record("q/1", "train", "A").model_copy(update={"gold": None})])
    with pytest.raises(DataError, match="task kind"):
        items_from_records([_log_record("q/1", "train", "maybe")])
    number = items_from_records([_log_record("q/2", "train", "1,080")])[0]
    assert (number.kind, number.gold) == ("number", "1080")


def test_hf_answerer_shared_prefix_equals_plain_generate(tiny_lm) -> None:
    """The prefix-cached batch decodes exactly what plain greedy ``generate`` decodes per prompt."""
    import torch

    model, tokenizer = tiny_lm
    conversations = [
        [{"role": "user", "content": "what is the capital of france ?"}],
        [{"role": "user", "content": "the capital"}],
    ]
    batched = HFAnswerer(model, tokenizer)(conversations, max_new_tokens=5)
    for conversation, answer in zip(conversations, batched, strict=True):
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        row = out[0, ids.shape[1] :].tolist()
        stop = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
        assert answer.text == tokenizer.decode(row[:stop], skip_special_tokens=True).strip()
