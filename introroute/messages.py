"""Validate and normalise OpenAI-style chat messages before they reach a tokenizer.

Why here and not inside the gatekeeper: every component (gatekeeper, router, labelling) must
reject the same bad input with the same typed error, before anything touches torch, and must agree
on what text a conversation contributes to the score.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from introroute.errors import MessagesError

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


@dataclass(frozen=True)
class NormalizedMessages:
    """Messages reduced to ``{"role", "content": str}`` pairs that any chat template can render.

    ``ignored_parts`` lists the content parts that carry no text (images, audio, files) as
    ``"messages[i].content[j] (type)"`` so callers can report what the score did not see.
    """

    messages: list[dict[str, str]]
    ignored_parts: list[str] = field(default_factory=list)


def _text_of_parts(parts: Sequence[Any], i: int, ignored: list[str]) -> str:
    texts: list[str] = []
    for j, part in enumerate(parts):
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, Mapping):
            raise MessagesError(
                f"messages[{i}].content[{j}] must be a string or a content-part object, "
                f"got {type(part).__name__}"
            )
        kind = part.get("type", "text")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise MessagesError(f"messages[{i}].content[{j}] is a text part without a string 'text'")
            texts.append(text)
        else:
            ignored.append(f"messages[{i}].content[{j}] ({kind})")
    return "\n".join(texts)


def _tool_calls_text(calls: Any, i: int) -> str:
    """Tool calls are part of the conversation the next answer depends on: render them as JSON."""
    if not isinstance(calls, Sequence) or isinstance(calls, str | bytes):
        raise MessagesError(f"messages[{i}].tool_calls must be a list")
    try:
        return json.dumps([dict(c) for c in calls], ensure_ascii=False, sort_keys=True, default=str)
    except RecursionError:  # a RecursionError must not escape: it is not a typed error
        raise MessagesError(f"messages[{i}].tool_calls are nested too deeply to render") from None
    except Exception as exc:  # TypeError, ValueError, or whatever a str() of an odd object raises
        raise MessagesError(
            f"messages[{i}].tool_calls are not JSON-like objects: {type(exc).__name__}: {exc}"
        ) from exc


def _check_encodable(text: str, i: int) -> None:
    """Reject text no tokenizer can take: a lone surrogate (``"caf\\ud800"``, which JSON allows
    as an escape) is a valid Python ``str`` but not Unicode text, and fails deep in tokenisation."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MessagesError(
            f"messages[{i}].content is not valid Unicode text: a lone surrogate at character {exc.start}"
        ) from None


def messages_problem(messages: Any) -> str | None:
    """Why ``messages`` is not a chat-completions ``messages`` list, or ``None`` if it is.

    Only what every provider rejects anyway (not a list, empty, a non-object, an unknown role,
    ``content`` that is neither text, a list of parts nor null): the router and the proxy guard
    refuse these before any upstream call, and must never refuse a request a model would answer
    (a conversation without user text, an image-only request).
    """
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        return f"messages must be a list of message objects, got {type(messages).__name__}"
    if not messages:
        return "messages must contain at least one message, got []"
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            return f"messages[{i}] must be an object with 'role' and 'content', got {type(message).__name__}"
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            return f"messages[{i}].role is {role!r}; expected one of {sorted(ROLES)}"
        content = message.get("content")
        is_parts = isinstance(content, Sequence) and not isinstance(content, str | bytes)
        if not (content is None or isinstance(content, str) or is_parts):
            return f"messages[{i}].content must be a string or a list of parts, got {type(content).__name__}"
        for j, part in enumerate(content if is_parts else ()):
            if not isinstance(part, str | Mapping):
                return f"messages[{i}].content[{j}] must be a content-part object, got {type(part).__name__}"
    return None


def check_messages(messages: Any) -> None:
    """Raise :class:`MessagesError` with :func:`messages_problem`'s cause, if any."""
    problem = messages_problem(messages)
    if problem is not None:
        raise MessagesError(problem)


def normalize_messages(messages: Any) -> NormalizedMessages:
    """Check ``messages`` and return text-only messages for a chat template.

    Raises :class:`MessagesError` naming the offending index when the list is empty, a message is
    not a mapping, a role is unknown, content has the wrong type or is not valid Unicode text
    (lone surrogates), or no user message has text.
    """
    check_messages(messages)
    out: list[dict[str, str]] = []
    ignored: list[str] = []
    for i, msg in enumerate(messages):
        role = msg["role"]
        content = msg.get("content")
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        else:  # a list of parts: check_messages refused anything else
            text = _text_of_parts(content, i, ignored)
        if msg.get("tool_calls"):
            calls = _tool_calls_text(msg["tool_calls"], i)
            text = f"{text}\n{calls}" if text else calls
        _check_encodable(text, i)
        out.append({"role": str(role), "content": text})
    if not any(m["role"] == "user" and m["content"].strip() for m in out):
        raise MessagesError("messages contain no user message with text content: nothing to score")
    return NormalizedMessages(messages=out, ignored_parts=ignored)
