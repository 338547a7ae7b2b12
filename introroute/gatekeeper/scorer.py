"""IntroLM's scoring API: the :class:`~introroute.scoring.Scorer` contract over its forwards.

Every way to get a score ends in one of two forwards of the model
(:class:`~introroute.gatekeeper.model.IntroLM`):

- a *prefill* (:meth:`ScorerMixin.prefill`, :meth:`~ScorerMixin.prefill_batch`) runs prompt +
  [INTRO] in full and keeps a single prompt's KV cache, which a local answer then continues
  from (:mod:`introroute.gatekeeper.generation`);
- a *score-only* forward (:meth:`~ScorerMixin.scores_encoded`, and ``scores``, ``score``,
  ``scores_batch``, ``score_batch``, which encode, chunk or pick a target around it) keeps no
  cache and reuses the chat template head's KV cache shared by all prompts (:meth:`shared_head`).

Kept apart from the model the way transformers keeps ``generate`` in ``GenerationMixin``: the
model file says how a forward is computed, this one what a caller gets from it and how
concurrent callers take turns (:class:`ScoringFirst`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedModel

from introroute.errors import UnknownTargetError
from introroute.gatekeeper.config import IntroConfig
from introroute.gatekeeper.fastpath import IntroView
from introroute.gatekeeper.prefix import HeadCache, attention_window, suffix_layout, template_head
from introroute.gatekeeper.prompting import PromptIds, encode_prompt
from introroute.scoring import Messages


@dataclass
class Prefill:
    """The result of one scoring prefill: scores, and the prompt's KV cache for generation.

    The cache holds the prompt positions only (the introspective tokens are cropped off); it is
    consumed by one :meth:`~introroute.gatekeeper.generation.LocalGenerationMixin.generate_from`
    call. A row of a multi-row batch (:meth:`ScorerMixin.prefill_batch`) has no cache (``cache``,
    ``next_token_logits`` None) but keeps its ``prompt``: generation prefills it alone first.
    """

    scores: dict[str, float]
    cache: DynamicCache | None
    input_ids: torch.Tensor
    next_token_logits: torch.Tensor | None
    truncated: bool
    ignored_parts: list[str]
    timings: dict[str, float]
    consumed: bool = False
    prompt: PromptIds | None = None

    @property
    def score(self) -> float:
        """The first target's probability (the gatekeeper's default target)."""
        return next(iter(self.scores.values()))

    @property
    def prompt_tokens(self) -> int:
        return int(self.input_ids.shape[1])


class ScoringFirst:
    """One scoring forward at a time, and decode steps stand aside while one waits or runs.

    Scoring forwards share state (PEFT's per-call hooks, the template head's cache), hence the
    lock. Decode steps do not take it: each runs the plain view (its own module tree, no hooks)
    on its own KV cache, so a generation never holds up scoring. Instead a decode step waits
    while a scoring forward waits or runs: two Python threads running forwards side by side
    hand the GIL back and forth at every operator (the convoy effect), which made a scoring
    forward several times slower.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._forwards = 0  # scoring forwards waiting for the lock or holding it
        self._forwards_done = threading.Condition()

    @contextmanager
    def scoring(self) -> Iterator[None]:
        """Hold the lock for a scoring forward; decode steps wait meanwhile."""
        with self._forwards_done:
            self._forwards += 1
        try:
            with self.lock:
                yield
        finally:
            with self._forwards_done:
                self._forwards -= 1
                if not self._forwards:
                    self._forwards_done.notify_all()

    def decode_turn(self) -> None:
        """Block a decode step until no scoring forward waits or runs."""
        with self._forwards_done:
            self._forwards_done.wait_for(lambda: not self._forwards)


class ScorerMixin:
    """Scores, prefills and the shared template head, for :class:`~introroute.gatekeeper.model.IntroLM`.

    Uses the model's encoding (``encode``, ``collate``), its forwards (``forward_batch``,
    ``next_token_logits``, ``head_logits``, ``uses_fast_path``) and the attributes below.
    """

    config: IntroConfig
    tokenizer: Any
    plain: PreTrainedModel
    intro_ids: list[int]
    pad_id: int
    turns: ScoringFirst
    _view: IntroView | None
    _head_cache: HeadCache | None
    device: torch.device
    targets: list[str]
    encode: Callable[[Messages], PromptIds]
    collate: Callable[[Sequence[PromptIds]], Any]
    forward_batch: Callable[..., Any]
    next_token_logits: Callable[[Any], torch.Tensor]
    head_logits: Callable[[torch.Tensor], torch.Tensor]
    uses_fast_path: Callable[[], bool]

    def _target_index(self, target: str | None) -> int:
        if target is None:
            return 0
        try:
            return self.config.targets.index(target)
        except ValueError:
            raise UnknownTargetError(
                f"unknown target {target!r}; this gatekeeper has {self.targets}"
            ) from None

    # ------------------------------------------------------------------ the shared template head
    def shared_head(self) -> HeadCache | None:
        """The chat template head's KV cache (see :mod:`introroute.gatekeeper.prefix`), prefilled
        by the plain base model on first use; ``None`` when ``config.prefix_cache`` is off or the
        template puts nothing in front of a user message.

        Computed once under the scoring lock, then only read: concurrent scorers share it.
        """
        if not self.config.prefix_cache:
            return None
        head = self._head_cache
        if head is None:
            with self.turns.lock:
                head = self._head_cache
                if head is None:
                    ids = template_head(self._render_untruncated)
                    head = HeadCache.prefill(self.plain, ids) if ids else HeadCache((), ())
                    self._head_cache = head
        return head if len(head) else None

    def _render_untruncated(self, messages: Messages) -> list[int]:
        """``encode``'s ids without left truncation (a short ``max_context`` must not cut into
        the head that :func:`template_head` looks for)."""
        return encode_prompt(self.tokenizer, messages, max_prompt_tokens=1 << 30).ids

    def _head_cached_logits(self, prompts: Sequence[PromptIds]) -> torch.Tensor | None:
        """Head logits ``[B, targets]`` with each prompt's part of the template head taken from
        :meth:`shared_head`: one fast-path forward over the rest of each prompt and [INTRO].
        ``None`` where that does not apply (no head, no prompt shares any of it, or a training /
        gradient / disabled-adapter call, which the fast path does not serve): run in full."""
        if not self.uses_fast_path():
            return None
        head = self.shared_head()
        if head is None:
            return None
        reused = [head.reuse(p.ids) for p in prompts]
        cached = max(reused)
        if cached == 0:
            return None
        ids = [p.ids for p in prompts]
        layout = suffix_layout(ids, reused, cached, self.pad_id, tail=self.intro_ids)
        window = attention_window(self.plain)
        if window is not None and layout.attention_mask.shape[1] > window:
            return None  # pads mid-row would take window slots (see attention_window)
        assert self._view is not None
        device = self.device
        states = self._view(
            layout.input_ids.to(device),
            layout.attention_mask.to(device),
            layout.position_ids.to(device),
            head.cache(len(prompts), cached),
        )
        return self.head_logits(states[:, -len(self.intro_ids) :])

    def _score_logits(self, prompts: Sequence[PromptIds]) -> torch.Tensor:
        """Head logits of a score-only forward (no KV cache kept, no LM logits): on top of the
        shared template head where it applies, else one full left-padded forward. Called under
        the scoring lock."""
        logits = self._head_cached_logits(prompts)
        if logits is None:
            logits = self.forward_batch(self.collate(prompts)).head_logits
        return logits

    def _probabilities(self, logits: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(logits.float()).cpu().numpy().astype(np.float64)

    # ------------------------------------------------------------------ prefills (scores + cache)
    def prefill(self, messages: Messages) -> Prefill:
        """Score ``messages`` and keep the prompt's KV cache, ready for ``generate_from``."""
        started = time.perf_counter()
        prompt = self.encode(messages)
        encoded = time.perf_counter()
        prefill = self.prefill_batch([prompt])[0]
        prefill.timings = {
            "encode_s": encoded - started,
            "forward_s": prefill.timings["forward_s"],
            "total_s": time.perf_counter() - started,
        }
        return prefill

    def prefill_batch(self, prompts: Sequence[PromptIds]) -> list[Prefill]:
        """:meth:`prefill` for already encoded prompts, as one padded forward.

        Scores equal unbatched ones to fp32 rounding. Only a single prompt keeps its KV cache:
        in a padded batch the prompt's cache comes out different in the last bits (attention
        over a padded, masked row reduces in another order), and greedy decoding can turn that
        into another answer at a near-tie. So the rows of a multi-row batch carry scores only,
        and ``generate_from`` prefills such a row alone first: a local answer never depends on
        which requests happened to share its scoring forward (at the price of a second prefill
        for the requests that were batched and then answered locally). Being scores only, a
        multi-row batch runs on top of the shared template head (:meth:`shared_head`); a single
        prompt is prefilled in full, so its cache is exactly a plain prefill's.
        """
        single = len(prompts) == 1
        started = time.perf_counter()
        cache, next_logits = None, None
        with self.turns.scoring(), torch.inference_mode():
            if single:
                output = self.forward_batch(self.collate(prompts), use_cache=True)
                head_logits, cache, next_logits = (
                    output.head_logits,
                    output.cache,
                    self.next_token_logits(output).float().cpu(),
                )
            else:
                head_logits = self._score_logits(prompts)
        forward_s = time.perf_counter() - started
        probs = self._probabilities(head_logits)
        return [
            Prefill(
                scores=dict(zip(self.targets, probs[row].tolist(), strict=True)),
                cache=cache,
                input_ids=torch.tensor([prompt.ids], dtype=torch.long),
                next_token_logits=next_logits,
                truncated=prompt.truncated,
                ignored_parts=prompt.ignored_parts,
                timings={"forward_s": forward_s},
                prompt=prompt,
            )
            for row, prompt in enumerate(prompts)
        ]

    # ------------------------------------------------------------------ scores only
    def scores_encoded(self, prompts: Sequence[PromptIds]) -> list[dict[str, float]]:
        """Scores of already encoded prompts, as one forward without a KV cache (on top of the
        shared template head where it applies, see :meth:`shared_head`)."""
        with self.turns.scoring(), torch.inference_mode():
            head_logits = self._score_logits(prompts)
        probs = self._probabilities(head_logits)
        return [dict(zip(self.targets, row.tolist(), strict=True)) for row in probs]

    def scores(self, messages: Messages) -> dict[str, float]:
        """P(success) for every target, from one forward (no KV cache kept, no LM logits)."""
        return self.scores_encoded([self.encode(messages)])[0]

    def score(self, messages: Messages, target: str | None = None) -> float:
        """P(success) for one target (default: the first)."""
        index = self._target_index(target)
        return self.scores(messages)[self.targets[index]]

    def scores_batch(self, conversations: Sequence[Messages], batch_size: int = 8) -> np.ndarray:
        """``[N, targets]`` probabilities; each chunk of ``batch_size`` is one forward."""
        if not conversations:
            return np.zeros((0, len(self.targets)))
        prompts = [self.encode(m) for m in conversations]
        chunks = []
        for start in range(0, len(prompts), batch_size):
            with self.turns.scoring(), torch.inference_mode():
                head_logits = self._score_logits(prompts[start : start + batch_size])
            chunks.append(self._probabilities(head_logits))
        return np.concatenate(chunks, axis=0)

    def score_batch(
        self, conversations: Sequence[Messages], target: str | None = None, batch_size: int = 8
    ) -> np.ndarray:
        """``[N]`` probabilities for one target (default: the first)."""
        return self.scores_batch(conversations, batch_size)[:, self._target_index(target)]
