"""Shared-prefix KV caches: the chat template's head is prefilled once, not once per prompt.

Why: chat-formatted prompts start with the same template tokens. SmolLM2's template puts its
default system prompt and ``<|im_start|>user\\n`` (~25 tokens) in front of every single-user
conversation, most of a factual question's ~38. The head's KV cache is the plain base model's
(nothing trainable touches a prompt position: the activated LoRA starts at ``[INTRO]``), so it
can be computed once and every forward can run only the tokens after it.

The pieces, used by serving (:class:`introroute.gatekeeper.model.IntroLM` keeps one
:class:`HeadCache` of the template head per loaded gatekeeper) and by training (which prefills
the head a batch shares, :mod:`introroute.training.gatekeeper`):

- :func:`template_head` finds the head from the tokenizer's chat template (the ids that several
  rendered single-user conversations share), for any template, not SmolLM2's alone;
- :class:`HeadCache` holds the head's KV for one row, read-only: each forward gets a cache of
  its own that starts with it (``DynamicCache`` grows by concatenation, so the held tensors are
  never written);
- :func:`suffix_layout` lays out what each row adds after the part of the head it reuses, left
  padded: ``[head | pads | own tokens]``. Each row reuses the longest prefix it shares with the
  head (a custom system message shares only ``<|im_start|>system\\n``, a left-truncated prompt
  nothing); the attention mask covers the cache columns (the ones a row does not share masked)
  and the new tokens, and positions follow the mask, so every row is computed as if alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

from introroute.scoring import Messages

# Contents whose first tokens differ in any tokenizer (at least two of them): the rendered
# conversations then share the template's head and nothing of the contents.
_PROBES = ("0", "x", "?", "Hello there", "Z")


def common_prefix(rows: Sequence[Sequence[int]], keep: int = 1) -> int:
    """How many leading ids every row shares, at most the shortest row minus ``keep`` (so that
    each row keeps ``keep`` tokens of its own after the shared part)."""
    if not rows:
        return 0
    first = rows[0]
    limit = max(0, min(len(r) for r in rows) - keep)
    for i in range(limit):
        if any(r[i] != first[i] for r in rows):
            return i
    return limit


def template_head(encode: Callable[[Messages], Sequence[int]]) -> list[int]:
    """The token ids the chat template puts before a single-user conversation's content.

    ``encode`` renders and tokenises messages exactly as scoring does. Detected, not assumed:
    the ids shared by conversations whose contents differ from their first token on (for
    SmolLM2, the default system prompt and ``<|im_start|>user\\n``). Empty when the template
    puts nothing in front, or messages cannot be encoded at all (no chat template).
    """
    try:
        rendered = [list(encode([{"role": "user", "content": text}])) for text in _PROBES]
    except Exception:  # no chat template, or one that rejects these messages: no head
        return []
    return rendered[0][: common_prefix(rendered, keep=0)]


def attention_window(model: PreTrainedModel) -> int | None:
    """The fewest positions a layer of ``model`` attends over (a sliding window or an attention
    chunk); None when every layer attends over the whole sequence.

    Why it matters here: attention masks pads wherever they sit, but a sliding-window (or
    chunked) layer counts its window in sequence slots. A layout with pads in the middle
    (``[head | pads | own tokens]``) computes each row as alone only while the whole row fits
    in the narrowest window (Gemma 3's are 512 tokens); wider batches are prefilled whole.
    """
    text = model.config.get_text_config()
    types = set(getattr(text, "layer_types", None) or [])
    windows = [
        size
        for size, kind in ((getattr(text, "sliding_window", None), "sliding_attention"),
                           (getattr(text, "attention_chunk_size", None), "chunked_attention"))
        if size and (not types or kind in types)
    ]  # fmt: skip
    return min(windows) if windows else None


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip masked columns (left padding), as ``generate`` computes them."""
    return (mask.cumsum(dim=-1) - 1).clamp(min=0)


@dataclass(frozen=True)
class HeadCache:
    """The KV cache of a token head for one row, from the plain base model; never written."""

    ids: tuple[int, ...]
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # (keys, values) [1, kv heads, head, dim]

    @classmethod
    def prefill(cls, model: PreTrainedModel, ids: Sequence[int]) -> HeadCache:
        """Run ``ids`` alone through ``model`` (the plain base model) without gradients.

        The tensors are ordinary ones even when called under ``inference_mode``, so the head is
        usable by inference and by training (whose backward never reaches it) alike.
        """
        with torch.inference_mode(False), torch.no_grad():
            out = model(
                input_ids=torch.tensor([list(ids)], dtype=torch.long, device=model.device),
                cache=DynamicCache(),
                use_cache=True,
                logits_to_keep=1,
            )
        layers = tuple((layer.keys, layer.values) for layer in out.cache.layers)
        return cls(tuple(ids), layers)

    def __len__(self) -> int:
        return len(self.ids)

    def reuse(self, prompt: Sequence[int]) -> int:
        """How many of ``prompt``'s leading ids this head covers (the prompt keeps one of its own)."""
        return max(0, min(common_prefix([self.ids, prompt], keep=0), len(prompt) - 1))

    def cache(self, rows: int, length: int | None = None) -> DynamicCache:
        """A new cache holding the head's first ``length`` positions (default: all) in ``rows``
        rows, ready to be extended by a forward."""
        cache = DynamicCache()
        for index, (keys, values) in enumerate(self.layers):
            cache.update(
                keys[:, :, :length].expand(rows, -1, -1, -1),
                values[:, :, :length].expand(rows, -1, -1, -1),
                index,
            )
        return cache


@dataclass(frozen=True)
class SuffixLayout:
    """What a batch runs on top of a head cache of ``cached`` positions (see :func:`suffix_layout`)."""

    input_ids: torch.Tensor  # [B, W]: each row's own tokens, left-padded
    attention_mask: torch.Tensor  # [B, cached + W]: cache columns, then the new ones
    position_ids: torch.Tensor  # [B, W]
    cached: int


def suffix_layout(
    rows: Sequence[Sequence[int]],
    reused: Sequence[int],
    cached: int,
    pad_id: int,
    tail: Sequence[int] = (),
) -> SuffixLayout:
    """Row ``r`` reuses the first ``reused[r]`` (<= ``cached``) positions of a head cache and runs
    ``rows[r][reused[r]:] + tail``, left-padded to a common width.

    Its mask is ``[1] * reused[r] + [0] * (cached - reused[r])`` over the cache, then 0 for its
    pads and 1 for its tokens, so it attends to exactly its own prefix; its positions continue
    from ``reused[r]``.
    """
    own = [list(row[start:]) + list(tail) for row, start in zip(rows, reused, strict=True)]
    width = max(len(o) for o in own)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), cached + width), dtype=torch.long)
    for row, (tokens, start) in enumerate(zip(own, reused, strict=True)):
        ids[row, width - len(tokens) :] = torch.tensor(tokens, dtype=torch.long)
        mask[row, :start] = 1
        mask[row, cached + width - len(tokens) :] = 1
    return SuffixLayout(ids, mask, positions(mask)[:, cached:], cached)
