"""Turn chat messages into the token ids the gatekeeper scores: template, spoof-proofing, truncation.

The chat template is rendered with placeholders instead of message contents, so the template's own
special tokens (``<|im_start|>``...) are tokenised as special tokens while user-controlled text is
tokenised with ``split_special_tokens=True``: a user who types ``[INTRO]`` or ``<|im_end|>`` gets
ordinary text tokens and cannot spoof the gatekeeper or inject a turn.

Why private copies of the Rust tokenizer: a fast (``tokenizers``) tokenizer implements
``split_special_tokens`` by setting ``encode_special_tokens`` on its one shared backend before each
call, so two threads encoding at once (template text and user text) flip it under each other; user
text then became real special tokens (the anti-spoofing guarantee broke under concurrency). The
two modes are therefore encoded by two frozen copies of the backend, one per mode, that nothing
ever mutates: no lock, and nothing anyone else does with the shared tokenizer can change them.
"""

from __future__ import annotations

import re
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

from introroute.errors import MessagesError
from introroute.messages import normalize_messages
from introroute.scoring import Messages

_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use code points: never produced by a chat template
_PLACEHOLDER = re.compile(f"{_OPEN}(\\d+){_CLOSE}")


@dataclass(frozen=True)
class PromptIds:
    """The prompt's token ids (without the introspective tokens) and what happened on the way."""

    ids: list[int]
    truncated: bool = False
    dropped_tokens: int = 0
    ignored_parts: list[str] = field(default_factory=list)


# tokenizer -> ((backend id, vocabulary size), template-mode copy, content-mode copy)
_frozen: weakref.WeakKeyDictionary[Any, tuple[tuple[int, int], Tokenizer, Tokenizer]] = (
    weakref.WeakKeyDictionary()
)
_frozen_lock = threading.Lock()


def _frozen_backends(tokenizer: PreTrainedTokenizerBase) -> tuple[Tokenizer, Tokenizer] | None:
    """(template copy, content copy) of a fast tokenizer's backend; ``None`` for Python tokenizers.

    The copies are rebuilt when tokens are added (``IntroLM.build`` adds ``[INTRO]``), keyed on the
    vocabulary size; they never encode with padding or truncation (the router truncates itself).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        return None
    version = (id(backend), backend.get_vocab_size(with_added_tokens=True))
    with _frozen_lock:
        entry = _frozen.get(tokenizer)
        if entry is None or entry[0] != version:
            serialized = backend.to_str()
            copies = []
            for split_special in (False, True):
                copy = Tokenizer.from_str(serialized)
                copy.no_padding()
                copy.no_truncation()
                copy.encode_special_tokens = split_special
                copies.append(copy)
            entry = (version, copies[0], copies[1])
            _frozen[tokenizer] = entry
    return entry[1], entry[2]


def _tokenize(tokenizer: PreTrainedTokenizerBase, text: str, *, split_special: bool) -> list[int]:
    if not text:
        return []
    frozen = _frozen_backends(tokenizer)
    if frozen is not None:
        return list(frozen[split_special].encode(text, add_special_tokens=False).ids)
    # Python tokenizers read the flag per call (no shared state to flip).
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=split_special)["input_ids"])


def _tokenize_content(tokenizer: PreTrainedTokenizerBase, text: str, index: int) -> list[int]:
    """A message's tokens; text the tokenizer rejects is the request's fault, a typed error, so a
    caller that encodes per request (the micro-batcher, ``introroute serve``) can answer it alone."""
    try:
        return _tokenize(tokenizer, text, split_special=True)
    except (TypeError, ValueError, UnicodeError) as exc:
        raise MessagesError(f"messages[{index}].content cannot be tokenised ({type(exc).__name__})") from None


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, max_prompt_tokens: int
) -> PromptIds:
    """Chat-template ``messages`` (with the generation prompt) and tokenise them safely.

    A prompt longer than ``max_prompt_tokens`` is left-truncated: the end of the conversation and
    the generation prompt are what the answer depends on, and the caller appends ``[INTRO]`` after.
    """
    normalized = normalize_messages(messages)
    contents = [m["content"] for m in normalized.messages]
    templated = [
        {"role": m["role"], "content": f"{_OPEN}{i}{_CLOSE}"} for i, m in enumerate(normalized.messages)
    ]
    if tokenizer.chat_template is None:
        raise MessagesError("the tokenizer has no chat template; the gatekeeper scores chat messages")
    rendered = tokenizer.apply_chat_template(templated, add_generation_prompt=True, tokenize=False)
    ids: list[int] = []
    pieces = _PLACEHOLDER.split(rendered)
    for position, piece in enumerate(pieces):
        if position % 2 == 0:  # template text: its special tokens are real special tokens
            ids += _tokenize(tokenizer, piece, split_special=False)
        else:  # a message's content: special-token text stays plain text
            ids += _tokenize_content(tokenizer, contents[int(piece)], int(piece))
    dropped = max(0, len(ids) - max_prompt_tokens)
    return PromptIds(
        ids=ids[dropped:],
        truncated=dropped > 0,
        dropped_tokens=dropped,
        ignored_parts=normalized.ignored_parts,
    )
