"""What kinds of input a request carries (text, image, audio, file, video), read from its parts.

Why the router needs this: the local tier is a text-only model; given a question about an image it
cannot see, it answers anyway and invents the content. Tiers declare the kinds they read
(``TierConfig.modalities``; default text for the local tier), and a request carrying a kind a tier
cannot read is sent elsewhere, with the reason in the decision's ``overrides``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# OpenAI / LiteLLM content-part types -> the modality they carry.
PART_KINDS = {
    "text": "text",
    "input_text": "text",
    "image_url": "image",
    "input_image": "image",
    "image": "image",
    "input_audio": "audio",
    "audio": "audio",
    "audio_url": "audio",
    "file": "file",
    "input_file": "file",
    "document": "file",
    "video_url": "video",
    "video": "video",
}


def request_modalities(messages: Any) -> frozenset[str]:
    """The input kinds in ``messages``; an unknown part type counts as its own kind (``"x"``).

    Never raises: malformed messages are the gatekeeper's and the provider's to reject.
    """
    kinds: set[str] = set()
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        return frozenset({"text"})
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if content is None or isinstance(content, str):
            kinds.add("text")
            continue
        if isinstance(content, bytes) or not isinstance(content, Sequence):
            continue
        for part in content:
            if isinstance(part, str):
                kinds.add("text")
            elif isinstance(part, Mapping):
                kind = part.get("type", "text")
                kinds.add(PART_KINDS.get(kind, str(kind)) if isinstance(kind, str) else "unknown")
    return frozenset(kinds or {"text"})
