"""Decoding that continues from an existing prefill (logits of the last prompt position + KV cache).

``transformers.generate`` always runs the prompt (or at least its last token) through the model
itself; it cannot start from logits it did not compute. Re-running the last prompt token would
make the local answer differ numerically from plain generation and waste the scoring prefill, so
this module drives the step loop itself and borrows everything else from transformers: the logits
processors (suppression of the introspective tokens, temperature, top-p) and the tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import (
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

Step = Callable[[int], torch.Tensor]
"""Feed one token (its id) through the model with the cache; return next-token logits ``[1, V]``."""


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens; temperature 0 means greedy (the default, as for reproducible routing)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class DecodeState:
    """Filled in while decoding, read by the caller once the iterator is exhausted."""

    token_ids: list[int]
    finish_reason: str | None = None


def _processors(params: SamplingParams, suppress: Sequence[int]) -> LogitsProcessorList:
    processors = LogitsProcessorList([SuppressTokensLogitsProcessor(list(suppress), device="cpu")])
    if params.temperature > 0:
        processors.append(TemperatureLogitsWarper(params.temperature))
        if params.top_p < 1.0:
            processors.append(TopPLogitsWarper(params.top_p))
    return processors


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters might still grow into a stop string, so must not be emitted yet."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                longest = max(longest, size)
                break
    return longest


def decode(
    *,
    first_logits: torch.Tensor,
    prompt_ids: torch.Tensor,
    step: Step,
    tokenizer: PreTrainedTokenizerBase,
    eos_ids: Sequence[int],
    suppress_ids: Sequence[int],
    params: SamplingParams,
    state: DecodeState,
) -> Iterator[str]:
    """Yield text pieces as tokens are chosen; record ids and the finish reason in ``state``.

    Pieces are emitted only once they decode to whole characters and cannot be the start of a stop
    string; the stop string itself and the EOS token are never emitted.
    """
    processors = _processors(params, suppress_ids)
    generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
    ids = prompt_ids
    logits = first_logits
    emitted = 0
    text = ""
    for position in range(params.max_new_tokens):
        scores = processors(ids, logits.float())
        if params.temperature > 0:
            token = int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)[0, 0])
        else:
            token = int(scores.argmax(dim=-1)[0])
        if token in eos_ids:
            state.finish_reason = "stop"
            break
        state.token_ids.append(token)
        text = tokenizer.decode(state.token_ids, skip_special_tokens=True)
        hit = min((text.find(s) for s in params.stop if s in text), default=-1)
        if hit >= 0:
            text, state.finish_reason = text[:hit], "stop"
            break
        safe = len(text) - _held_back(text, params.stop)
        if not text.endswith("\ufffd") and safe > emitted:
            yield text[emitted:safe]
            emitted = safe
        if position + 1 == params.max_new_tokens:
            break
        ids = torch.cat([ids, torch.tensor([[token]], dtype=ids.dtype)], dim=1)
        logits = step(token)
    if state.finish_reason is None:
        state.finish_reason = "length"
    if len(text) > emitted:
        yield text[emitted:]
