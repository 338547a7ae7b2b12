"""Serve the local tier in-process, continuing from the scoring prefill's KV cache.

Why through LiteLLM at all: the router dispatches every tier with ``litellm.completion`` so that
retries, fallbacks, callbacks, usage accounting and the stream wrapper are the same whichever
tier answers. The local tier is therefore the model ``introroute/<router>/local`` of introroute's
own LiteLLM provider, which calls into this module. The prefill the gatekeeper computed while
scoring is lent to that call through LiteLLM's ``metadata`` (a handle, not the object, so nothing
unserialisable reaches LiteLLM's loggers); without one (fail-safe, direct calls) the tier
prefills itself.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from litellm import ModelResponse
from litellm.types.utils import GenericStreamingChunk, Usage

from introroute.scoring import Generation, GenerationStream, LocalModel

PREFILL_KEY = "introroute_prefill"
# OpenAI's default answer budget is the context window; a CPU model needs a sane cap.
DEFAULT_MAX_NEW_TOKENS = 512

_lent: dict[str, Any] = {}


@contextmanager
def lend(prefill: Any) -> Iterator[dict[str, str]]:
    """LiteLLM ``metadata`` entries that hand ``prefill`` to the local tier during the block."""
    if prefill is None:
        yield {}
        return
    key = uuid.uuid4().hex
    _lent[key] = prefill
    try:
        yield {PREFILL_KEY: key}
    finally:
        _lent.pop(key, None)  # unused (another tier answered): let the KV cache go


def _claim(litellm_params: Mapping[str, Any] | None) -> Any:
    metadata = (litellm_params or {}).get("metadata") or {}
    key = metadata.get(PREFILL_KEY)
    return _lent.pop(key, None) if key else None


def generation_args(optional_params: Mapping[str, Any]) -> dict[str, Any]:
    """Map OpenAI sampling parameters to ``LocalModel.generate_from`` keywords (greedy by default)."""
    stop = optional_params.get("stop")
    max_new = optional_params.get("max_completion_tokens") or optional_params.get("max_tokens")
    return {
        "max_new_tokens": int(max_new or DEFAULT_MAX_NEW_TOKENS),
        "temperature": float(optional_params.get("temperature") or 0.0),
        "top_p": float(optional_params.get("top_p") or 1.0),
        "seed": optional_params.get("seed"),
        "stop": [stop] if isinstance(stop, str) else stop,
    }


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class LocalTier:
    """The local tier of one router, answering as LiteLLM's custom-provider hooks expect.

    ``max_generations`` bounds the answers generated at once (``None``: no bound); the others
    wait for a slot, first come first served. Decode steps run beside scoring, not under its
    lock (see :class:`~introroute.gatekeeper.model.IntroLM`), so the bound is what keeps local
    answers from taking every core from the scoring forwards (and bounds the KV caches alive).
    A slot is held from the answer's first token to its last (for a stream, until it is
    exhausted or closed).
    """

    def __init__(
        self, model: Callable[[], LocalModel], label: str, max_generations: int | None = None
    ) -> None:
        self._model = model
        self.label = label
        self._slots = threading.BoundedSemaphore(max_generations) if max_generations else None

    @contextmanager
    def _slot(self) -> Iterator[None]:
        if self._slots is None:
            yield
            return
        with self._slots:
            yield

    def _generate(self, messages: list[Any], params: Mapping[str, Any], prefill: Any, stream: bool) -> Any:
        model = self._model()
        if prefill is None:
            prefill = model.prefill(messages)
        return model.generate_from(prefill, stream=stream, **generation_args(params))

    def complete(
        self,
        messages: list[Any],
        optional_params: Mapping[str, Any],
        litellm_params: Any,
        response: ModelResponse,
    ) -> ModelResponse:
        """Generate the whole answer into LiteLLM's pre-built ``response``."""
        prefill = _claim(litellm_params)
        with self._slot():
            generation: Generation = self._generate(messages, optional_params, prefill, stream=False)
        response.choices[0].message.content = generation.text  # type: ignore[union-attr]
        response.choices[0].finish_reason = generation.finish_reason
        response.model = self.label
        response.usage = Usage(**_usage(generation.prompt_tokens, generation.completion_tokens))  # type: ignore[attr-defined]
        return response

    def stream(
        self, messages: list[Any], optional_params: Mapping[str, Any], litellm_params: Any
    ) -> Generator[GenericStreamingChunk, None, None]:
        """The answer's chunks: the lent prefill is claimed now, while it is lent; the slot is
        taken and generation starts at the first ``next()`` (on a worker thread for
        :meth:`astream`, so the event loop never waits for a slot)."""
        return self._chunks_in_slot(messages, optional_params, _claim(litellm_params))

    def _chunks_in_slot(
        self, messages: list[Any], optional_params: Mapping[str, Any], prefill: Any
    ) -> Generator[GenericStreamingChunk, None, None]:
        with self._slot():
            yield from _chunks(self._generate(messages, optional_params, prefill, stream=True))

    async def acomplete(self, *args: Any) -> ModelResponse:
        """:meth:`complete` on a thread of its own (generation is CPU-bound; the loop stays free).

        Not asyncio's default executor: a request waiting for a slot would hold one of its few
        workers, and enough of them would starve every other ``to_thread`` user of the loop.
        """
        return await _in_own_thread(self.complete, *args)

    def astream(self, *args: Any) -> AsyncIterator[GenericStreamingChunk]:
        """:meth:`stream` as an async iterator, each next piece computed on the stream's own thread.

        A plain function, not an async generator: the prefill must be claimed during the call.
        """
        return _next_in_thread(self.stream(*args))


async def _in_own_thread(function: Callable[..., Any], *args: Any) -> Any:
    with ThreadPoolExecutor(1, thread_name_prefix="introroute-local") as thread:
        return await asyncio.get_running_loop().run_in_executor(thread, function, *args)


def _chunks(generation: GenerationStream) -> Iterator[GenericStreamingChunk]:
    """Text pieces as LiteLLM generic chunks, then one closing chunk with finish reason and usage."""
    for piece in generation:
        yield _chunk(piece)
    yield _chunk("", generation)


async def _next_in_thread(
    chunks: Generator[GenericStreamingChunk, None, None],
) -> AsyncIterator[GenericStreamingChunk]:
    """Each next chunk on this stream's own thread, and the stream closed there when the caller
    stops early (which frees its generation slot at once, not at garbage collection).

    Why a thread per stream: a stream waiting for a slot blocks its thread; on a shared pool
    (asyncio's default executor has a handful of workers) enough waiting streams would leave
    none for the stream holding the slot, and every one of them would wait for ever.
    """
    done = object()
    loop = asyncio.get_running_loop()
    thread = ThreadPoolExecutor(1, thread_name_prefix="introroute-local")
    try:
        while (chunk := await loop.run_in_executor(thread, next, chunks, done)) is not done:
            yield chunk  # type: ignore[misc]
    finally:
        thread.submit(chunks.close)
        thread.shutdown(wait=False)


def _chunk(text: str, finished: GenerationStream | None = None) -> GenericStreamingChunk:
    return GenericStreamingChunk(
        text=text,
        tool_use=None,
        is_finished=finished is not None,
        finish_reason=(finished.finish_reason or "stop") if finished else "",
        usage=_usage(finished.prompt_tokens, finished.completion_tokens) if finished else None,  # type: ignore[typeddict-item]
        index=0,
    )
