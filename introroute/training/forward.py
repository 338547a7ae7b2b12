"""Training's forward: the prompt once, without gradients; the introspective tokens on top.

Why it is fast on a CPU: the activated LoRA and the [INTRO] embedding touch no prompt position,
so the prompt's KV cache is the frozen base model's and needs no gradient. A step runs the
prompt through the plain base model under ``no_grad`` (:func:`prompt_cache`, or the cache kept
from the first epoch), then runs only the k introspective tokens, with the adapter, on top of
that cache (:func:`intro_forward`), and backpropagates through those k positions alone.
:func:`naive_head_logits` is the full forward+backward this replaces; the tests prove both give
the same loss and gradients.

Chat-formatted prompts share their template head, so a batch is laid out with the shared head
first (:func:`prefix_first`) and that head prefilled once (:func:`shared_prefix_cache`).
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.tuners_utils import cast_adapter_dtype
from transformers import DynamicCache

from introroute.gatekeeper.model import Batch, IntroLM
from introroute.gatekeeper.prefix import HeadCache, attention_window, common_prefix, positions, suffix_layout


def upcast_trainable(gk: IntroLM) -> None:
    """fp32 master weights for what trains (LoRA, [INTRO] rows), also on a half-precision base.

    PEFT re-creates the upcast parameters, so the gatekeeper's fast-path view, which holds the
    parameter objects, is rebuilt over the new ones. A no-op on an fp32 base.
    """
    cast_adapter_dtype(gk.peft_model, "default", autocast_adapter_dtype=True)
    gk.rebuild_fast_path()


def prompt_cache(gk: IntroLM, batch: Batch) -> DynamicCache:
    """The prompt's KV cache from the plain base model, without gradients.

    Nothing trainable touches prompt positions, so training needs no gradient through them:
    this is the expensive part of a training step, done once, cheaply.
    """
    with torch.no_grad():
        out = gk.plain(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=positions(batch.attention_mask),
            cache=DynamicCache(),
            use_cache=True,
            logits_to_keep=1,
        )
    return out.cache


def intro_forward(gk: IntroLM, batch: Batch, cache: DynamicCache) -> torch.Tensor:
    """Head logits ``[B, targets]`` from the introspective tokens run on top of a prompt cache.

    The cache grows by the introspective positions; callers that reuse it crop it back.
    """
    k = len(gk.intro_ids)
    intro, mask = gk.intro_inputs(batch)
    with gk.final_hidden(k) as captured:
        gk.peft_model(
            input_ids=intro,
            attention_mask=mask,
            position_ids=batch.lengths.unsqueeze(1) + torch.arange(k, device=gk.device).unsqueeze(0),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    return gk.head_logits(captured[0])


def naive_head_logits(gk: IntroLM, batch: Batch) -> torch.Tensor:
    """The reference: one adapter-active forward over prompt + [INTRO] (gradients everywhere)."""
    return gk.forward_batch(batch).head_logits


def fast_head_logits(gk: IntroLM, batch: Batch) -> torch.Tensor:
    """The training path: prompt cache without gradients, then the [INTRO] tokens alone."""
    batch = prefix_first_where_exact(gk, batch)
    return intro_forward(gk, batch, shared_prefix_cache(gk, batch))


def _shared_prefix(batch: Batch) -> int:
    """How many leading tokens every prompt of the batch shares (at most the shortest minus one)."""
    rows = [p.ids for p in batch.prompts]
    return common_prefix(rows) if len(rows) > 1 else 0


def prefix_first(batch: Batch) -> Batch:
    """The batch re-laid out as ``[shared prefix | pads | rest]`` instead of ``[pads | prompt]``.

    Why: chat-formatted prompts share their template head (SmolLM2's default system prompt is
    ~25 of a factual question's ~37 tokens). With the shared head in the first columns of every
    row, :func:`shared_prefix_cache` prefills it once. The layout is serving's
    (:func:`introroute.gatekeeper.prefix.suffix_layout`, every row reusing the whole shared
    head): attention masks the pads wherever they sit and positions follow the mask, so each row
    is computed as alone (the tests check the loss and gradients against the naive forward on
    the left-padded batch).
    """
    shared = _shared_prefix(batch)
    if shared == 0:
        return batch
    pad = int(batch.input_ids[batch.attention_mask == 0][0]) if (batch.attention_mask == 0).any() else 0
    rows = [p.ids for p in batch.prompts]
    layout = suffix_layout(rows, [shared] * len(rows), shared, pad)
    device = batch.input_ids.device
    head = torch.tensor([rows[0][:shared]] * len(rows), dtype=torch.long, device=device)
    return Batch(
        torch.cat([head, layout.input_ids.to(device)], dim=1),
        layout.attention_mask.to(device),
        batch.lengths,
        batch.prompts,
    )


def prefix_first_where_exact(gk: IntroLM, batch: Batch) -> Batch:
    """:func:`prefix_first` unless the base's attention window is narrower than prompt + [INTRO].

    See :func:`introroute.gatekeeper.prefix.attention_window`: once a row is wider than the
    window, the pads in the middle would take the place of head tokens in the window of the
    tokens after them. Such a batch stays left-padded and is prefilled whole.
    """
    window = attention_window(gk.plain)
    if window is not None and batch.input_ids.shape[1] + len(gk.intro_ids) > window:
        return batch
    return prefix_first(batch)


def prefilled_head(batch: Batch) -> int:
    """The shared head of a :func:`prefix_first` batch; 0 for a left-padded one (pads first)."""
    shared = _shared_prefix(batch)
    return shared if bool(batch.attention_mask[:, :shared].all()) else 0


def shared_prefix_forward(gk: IntroLM, batch: Batch, **kwargs: Any) -> tuple[DynamicCache, Any]:
    """The plain base model over a :func:`prefix_first` batch, the shared head prefilled once
    (:class:`introroute.gatekeeper.prefix.HeadCache`, as serving's template head).

    Returns the prompt's KV cache (what :func:`prompt_cache` returns) and the model
    output of the rest of the prompt (``kwargs`` go to that call, e.g. ``output_hidden_states``).
    A batch left as collated (see :func:`prefix_first_where_exact`) is prefilled whole.
    """
    shared = prefilled_head(batch)
    rows = batch.input_ids.shape[0]
    with torch.no_grad():
        # full-length in every layer, as IntroLM's caches (a sliding-window layer's own cache
        # would keep only its last window of the shared head)
        cache = DynamicCache()
        if shared:
            cache = HeadCache.prefill(gk.plain, batch.prompts[0].ids[:shared]).cache(rows)
        out = gk.plain(
            input_ids=batch.input_ids[:, shared:],
            attention_mask=batch.attention_mask,
            position_ids=positions(batch.attention_mask)[:, shared:],
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **kwargs,
        )
    return cache, out


def shared_prefix_cache(gk: IntroLM, batch: Batch) -> DynamicCache:
    """:func:`prompt_cache` of a :func:`prefix_first` batch, the shared head prefilled once."""
    return shared_prefix_forward(gk, batch)[0]
