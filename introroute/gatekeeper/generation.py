"""Local answers: decoding that continues from a scoring prefill (last prompt logits + KV cache).

``transformers.generate`` always runs the prompt (or at least its last token) through the model
itself; it cannot start from logits it did not compute. Re-running the last prompt token would
make the local answer differ numerically from plain generation and waste the scoring prefill, so
this module drives the step loop itself and borrows everything else from transformers: the logits
processors (suppression of the introspective tokens, temperature, top-p) and the tokenizer.

:class:`LocalGenerationMixin` is the gatekeeper's side of it (``IntroLM.generate_from``): the
step function over the plain base model, and the turn it takes behind scoring forwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from introroute.errors import GatekeeperError
from introroute.gatekeeper.prompting import PromptIds
from introroute.gatekeeper.scorer import Prefill, ScoringFirst
from introroute.scoring import Generation, GenerationStream

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


class LocalGenerationMixin:
    """``generate_from`` for :class:`~introroute.gatekeeper.model.IntroLM`: the local answer.

    Uses the model's plain view of the base (``plain``), its tokenizer, stop and suppressed ids,
    ``prefill_batch`` (:class:`~introroute.gatekeeper.scorer.ScorerMixin`) and ``turns``.
    """

    plain: PreTrainedModel
    tokenizer: Any
    eos_ids: list[int]
    intro_ids: list[int]
    device: torch.device
    turns: ScoringFirst
    prefill_batch: Callable[[Sequence[PromptIds]], list[Prefill]]

    def _step_fn(self, prefill: Prefill) -> Step:
        position = prefill.prompt_tokens

        def step(token: int) -> torch.Tensor:
            nonlocal position
            self.turns.decode_turn()  # scoring first (see ScoringFirst)
            with torch.inference_mode():  # not under the scoring lock: see ScoringFirst
                out = self.plain(
                    input_ids=torch.tensor([[token]], device=self.device),
                    position_ids=torch.tensor([[position]], device=self.device),
                    cache=prefill.cache,
                    use_cache=True,
                )
            position += 1
            return out.logits[:, -1, :].float().cpu()

        return step

    def generate_from(
        self,
        prefill: Prefill,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        stream: bool = False,
    ) -> Generation | GenerationStream:
        """Continue decoding from ``prefill``'s cache: no second prefill, base-model tokens only
        (a row of a batched prefill is prefilled alone first; see ``prefill_batch``).

        Greedy by default; ``temperature > 0`` samples (``seed`` makes it reproducible). With
        ``stream=True`` returns a :class:`GenerationStream` of text pieces.
        """
        if prefill.consumed:
            raise GatekeeperError("this prefill's cache was already used for a generation; prefill again")
        prefill.consumed = True
        if prefill.cache is None:  # a row of a batched prefill: its own cache first
            assert prefill.prompt is not None
            prefill = self.prefill_batch([prefill.prompt])[0]
            prefill.consumed = True
        limit = self.plain.config.max_position_embeddings - prefill.prompt_tokens
        params = SamplingParams(
            max_new_tokens=max(0, min(max_new_tokens, limit)),
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop=tuple(stop or ()),
        )
        assert prefill.next_token_logits is not None
        state = DecodeState(token_ids=[])
        pieces = decode(
            first_logits=prefill.next_token_logits,
            prompt_ids=prefill.input_ids,
            step=self._step_fn(prefill),
            tokenizer=self.tokenizer,
            eos_ids=self.eos_ids,
            suppress_ids=self.intro_ids,
            params=params,
            state=state,
        )
        if stream:
            return _stream(pieces, state, prefill.prompt_tokens)
        text = "".join(pieces)
        return Generation(
            text=text,
            token_ids=state.token_ids,
            finish_reason=state.finish_reason or "length",
            prompt_tokens=prefill.prompt_tokens,
            completion_tokens=len(state.token_ids),
        )


def _stream(pieces: Iterator[str], state: DecodeState, prompt_tokens: int) -> GenerationStream:
    """Wrap the decode iterator so the stream's totals are filled in when it ends."""
    stream = GenerationStream(pieces=iter(()), prompt_tokens=prompt_tokens, token_ids=state.token_ids)

    def run() -> Iterator[str]:
        yield from pieces
        stream.finish_reason = state.finish_reason
        stream.completion_tokens = len(state.token_ids)

    stream.pieces = run()
    return stream
