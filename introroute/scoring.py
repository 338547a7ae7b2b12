"""The interfaces the router depends on, so any scorer (IntroLM, a baseline, a test fake) plugs in.

Data flows one way: messages -> :class:`Scorer` -> policy -> LiteLLM. A scorer that can also
serve the local tier from its own prefill implements :class:`LocalModel`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Messages = Sequence[dict[str, Any]]


@runtime_checkable
class Scorer(Protocol):
    """Anything that predicts, per target model, P(that model answers these messages well)."""

    @property
    def targets(self) -> list[str]:
        """Target names, e.g. ``["self", "gpt-4-1106-preview"]``; the first is the default."""
        ...

    def scores(self, messages: Messages) -> dict[str, float]:
        """One probability in [0, 1] per target, from a single prefill."""
        ...


@runtime_checkable
class AsyncScorer(Scorer, Protocol):
    """A scorer with its own async path: a client of a scoring service (``introroute serve``,
    llama-server). The service batches concurrent requests itself, so the router awaits each call
    directly instead of queueing it for the one worker thread an in-process model needs."""

    async def ascores(self, messages: Messages) -> dict[str, float]: ...


def is_async_scorer(scorer: object) -> bool:
    """Whether ``scorer`` is an :class:`AsyncScorer`, asked of its class: ``isinstance`` would read
    ``targets``, which for a remote scorer is a network call."""
    return callable(getattr(type(scorer), "ascores", None))


@dataclass
class Generation:
    """A finished local generation."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (EOS / stop string) or "length"
    prompt_tokens: int
    completion_tokens: int


@dataclass
class GenerationStream:
    """Iterator of text pieces; ``finish_reason`` and ``completion_tokens`` are set once exhausted."""

    pieces: Iterator[str]
    prompt_tokens: int
    finish_reason: str | None = None
    completion_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)

    def __iter__(self) -> Iterator[str]:
        return self.pieces


@runtime_checkable
class LocalModel(Protocol):
    """A scorer that also answers locally, continuing from the scoring prefill's KV cache."""

    @property
    def targets(self) -> list[str]: ...

    def prefill(self, messages: Messages) -> Any:
        """Score and keep the prompt's KV cache. Returns an object with ``.scores: dict[str, float]``."""
        ...

    def generate_from(
        self,
        prefill: Any,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        stream: bool = False,
    ) -> Generation | GenerationStream:
        """Continue decoding from ``prefill`` (used once: its cache is consumed)."""
        ...


@runtime_checkable
class BatchScorer(Protocol):
    """A scorer that scores many requests in one forward pass (IntroLM does).

    The router's micro-batcher encodes each request on its caller's thread (``encode``, which
    returns an object with the prompt's token ``ids``: their count is the request's cost), then
    runs the encoded prompts of concurrent requests together.
    """

    @property
    def targets(self) -> list[str]: ...

    def encode(self, messages: Messages) -> Any:
        """Validate and tokenise ``messages``; raises on messages it cannot score."""
        ...

    def scores_encoded(self, prompts: Sequence[Any]) -> list[dict[str, float]]:
        """One score dict per encoded prompt, from one forward."""
        ...

    def prefill_batch(self, prompts: Sequence[Any]) -> list[Any]:
        """One prefill (as :meth:`LocalModel.prefill` returns) per encoded prompt, from one forward."""
        ...
