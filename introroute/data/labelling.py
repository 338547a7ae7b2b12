"""Self-labelling: run a model over benchmark prompts, grade its answers, append routing records.

Why answerers are plain callables: the same loop labels the local base model (batched greedy
generation with any transformers model) and any LiteLLM model string, so a remote target's
labels are produced exactly like the local one's. Each record is appended and fsynced as soon as
it is graded, and a rerun skips ids already in the output, so a killed run loses at most one batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import litellm
from tqdm import tqdm

from introroute.data.benchmarks import BenchmarkItem
from introroute.data.graders import Grade, Kind, grade, judge_with_llm
from introroute.data.jsonl import RecordAppender, finished_ids, iter_records
from introroute.data.schema import Message, RoutingRecord, TargetOutcome
from introroute.data.stats import task_summary

MAX_NEW_TOKENS: dict[Kind, int] = {"mc": 16, "yesno": 8, "number": 320, "short": 16}
"""Enough for a letter, a yes/no, a short entity answer or a GSM8K chain of thought; more only
slows labelling."""

ChatMessages = list[dict[str, str]]


@dataclass(frozen=True)
class Answer:
    """One reply. Unknown counts and costs stay None; latency is the batch's time per item."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    latency_s: float | None = None


class Answerer(Protocol):
    """Anything that answers a batch of conversations, in order, as :class:`Answer` or plain text."""

    def __call__(self, batch: Sequence[ChatMessages], max_new_tokens: int) -> Sequence[Answer | str]: ...


class HFAnswerer:
    """Batched greedy generation with a transformers causal LM and its chat template.

    Why a shared-prefix cache: every chat-formatted prompt starts with the same template tokens
    (SmolLM2's default system prompt is ~25 of a factual question's ~37 tokens), so the batch's
    common prefix is prefilled once, its KV cache is repeated over the batch, and only each
    prompt's own tail is prefilled; that cuts labelling compute by about 40% on short questions.
    Tails are left-padded *after* the prefix; the attention mask hides the pads and positions
    follow the mask, so each row decodes as it would alone. Generation stops for the batch as
    soon as every row has produced EOS. The tokenizer itself is never modified.
    """

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer

    def __call__(self, batch: Sequence[ChatMessages], max_new_tokens: int) -> list[Answer]:
        import torch  # imported here: the LiteLLM path and log tools must not need torch

        from introroute.gatekeeper.prefix import HeadCache, common_prefix

        tok = self.tokenizer
        texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in batch]
        rows = [tok(text, add_special_tokens=False)["input_ids"] for text in texts]
        shared = common_prefix(rows)  # every row keeps >= 1 token for the first step
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        width = max(len(r) for r in rows) - shared
        ids, mask = [], []
        for row in rows:
            pads = width - (len(row) - shared)
            ids.append(row[:shared] + [pad_id] * pads + row[shared:])
            mask.append([1] * shared + [0] * pads + [1] * (len(row) - shared))
        kwargs: dict[str, Any] = {}
        if shared > 0:
            kwargs["cache"] = HeadCache.prefill(self.model, rows[0][:shared]).cache(len(rows))
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=torch.tensor(ids, device=self.model.device),
                attention_mask=torch.tensor(mask, device=self.model.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
                **kwargs,
            )
        latency = (time.perf_counter() - start) / len(batch)
        answers = []
        for generated, prompt in zip(out[:, len(ids[0]) :].tolist(), rows, strict=True):
            stop = generated.index(tok.eos_token_id) + 1 if tok.eos_token_id in generated else len(generated)
            answers.append(
                Answer(
                    text=tok.decode(generated[:stop], skip_special_tokens=True).strip(),
                    prompt_tokens=len(prompt),
                    completion_tokens=stop,
                    latency_s=latency,
                )
            )
        return answers


class LiteLLMAnswerer:
    """One ``litellm.completion`` per conversation (temperature 0); provider errors propagate.

    A failed call must not become a "wrong answer" label: the run stops and resumes later.
    ``completion_kwargs`` go to LiteLLM unchanged (``api_base``, ``mock_response`` in tests).
    """

    def __init__(self, model: str, **completion_kwargs: Any) -> None:
        self.model = model
        self.completion_kwargs = completion_kwargs

    def __call__(self, batch: Sequence[ChatMessages], max_new_tokens: int) -> list[Answer]:
        answers = []
        for messages in batch:
            start = time.perf_counter()
            reply = litellm.completion(
                model=self.model,
                messages=messages,
                max_tokens=max_new_tokens,
                temperature=0.0,
                **self.completion_kwargs,
            )
            usage = getattr(reply, "usage", None)
            try:
                cost = float(litellm.completion_cost(completion_response=reply))
            except Exception:  # unknown price (local server, custom model): cost stays unknown
                cost = None
            answers.append(
                Answer(
                    text=(reply.choices[0].message.content or "").strip(),
                    prompt_tokens=getattr(usage, "prompt_tokens", None),
                    completion_tokens=getattr(usage, "completion_tokens", None),
                    cost_usd=cost,
                    latency_s=time.perf_counter() - start,
                )
            )
        return answers


Grader = Callable[[BenchmarkItem, str], Grade]


def rule_grader(item: BenchmarkItem, response: str) -> Grade:
    """The task's rule grader: option letter, yes/no, or final number."""
    return grade(item.kind, response, item.gold, item.options, item.meta.get("entity"))


def llm_judge_grader(model: str, **completion_kwargs: Any) -> Grader:
    """A grader that asks ``model`` (through LiteLLM) whether the reply matches the gold answer."""

    def judge(item: BenchmarkItem, response: str) -> Grade:
        question = item.messages[-1]["content"]
        return judge_with_llm(question, response, item.gold, model, **completion_kwargs)

    return judge


def _record(
    item: BenchmarkItem, answer: Answer, result: Grade, target: str, model_name: str
) -> RoutingRecord:
    outcome = TargetOutcome(
        model=model_name,
        correct=result.correct,
        response=answer.text,
        parsed=result.parsed,
        cost_usd=answer.cost_usd,
        latency_s=answer.latency_s,
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
    )
    return RoutingRecord(
        id=item.id,
        dataset=item.dataset,
        subject=item.subject,
        split=item.split,
        messages=[Message(**m) for m in item.messages],
        outcomes={target: outcome},
        gold=item.gold,
        meta={**item.meta, "kind": item.kind, "source": "introroute label"},
    )


def label(
    items: Sequence[BenchmarkItem],
    answerer: Answerer,
    out: str | Path,
    *,
    target: str = "self",
    model_name: str,
    batch_size: int = 8,
    grader: Grader = rule_grader,
    max_new_tokens: int | None = None,
    progress: bool = True,
) -> int:
    """Answer, grade and append every item whose id is not yet labelled for ``target`` in ``out``.

    Returns how many records were appended. ``max_new_tokens`` overrides the per-kind default.
    """
    out = Path(out)
    done = finished_ids(out, target)
    # shortest first: a batch is padded to its longest prompt, so similar lengths waste less
    todo = sorted(
        (item for item in items if item.id not in done),
        key=lambda item: sum(len(m["content"]) for m in item.messages),
    )
    written = 0
    with (
        RecordAppender(out) as sink,
        tqdm(total=len(todo), unit="q", desc=f"label {target}", disable=not progress) as bar,
    ):
        for first in range(0, len(todo), batch_size):
            batch = todo[first : first + batch_size]
            budget = max_new_tokens or max(MAX_NEW_TOKENS[item.kind] for item in batch)
            replies = answerer([item.messages for item in batch], budget)
            if len(replies) != len(batch):
                raise RuntimeError(f"answerer returned {len(replies)} replies for {len(batch)} prompts")
            for item, reply in zip(batch, replies, strict=True):
                answer = reply if isinstance(reply, Answer) else Answer(text=reply)
                sink.append(_record(item, answer, grader(item, answer.text), target, model_name))
                written += 1
            bar.update(len(batch))
    return written


def write_summary(out: str | Path, target: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Summarise every record of ``target`` in ``out`` into ``<out>.summary.json``; returns it."""
    out = Path(out)
    summary = {
        "file": str(out),
        "target": target,
        **(extra or {}),
        "tasks": task_summary(iter_records(out), target),
    }
    Path(f"{out}.summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
