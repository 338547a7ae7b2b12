"""The router's decision record: one typed, versioned line of its routing log.

Why a contract of its own, at the package root: the router writes these records on the request
path, and the offline commands (``label``, ``eval``, ``calibrate``, ``train``) read them back;
neither side may import the other (``tests/test_layout.py``), so the schema lives here, next to
the other shared contracts, and depends on pydantic only.

Privacy: a record always carries ``id``, a SHA-256 of the prompt's text, so repeated questions
can be counted and labels joined without keeping any text. The prompt and the answers are kept
only when the router's ``log_prompts`` option is on (off by default).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from introroute.errors import MessagesError
from introroute.messages import normalize_messages

#: The schema version written by this code; readers refuse others instead of misreading them.
VERSION = 1


class Decision(BaseModel):
    """Everything needed to explain or replay one routed request."""

    model_config = ConfigDict(extra="forbid")

    router: str
    tier: str = Field(description="the tier that answered (after any fallbacks)")
    model: str = Field(description="its LiteLLM model string")
    scores: dict[str, float] = Field(
        default_factory=dict,
        description="P(success) per target as the policy saw it (calibrated when configured)",
    )
    raw_scores: dict[str, float] | None = Field(
        default=None, description="the gatekeeper's scores before calibration; None without calibration"
    )
    policy: str
    policy_params: dict[str, Any] = Field(default_factory=dict)
    policy_tier: str | None = Field(default=None, description="the policy's own choice; None on fail-safe")
    policy_detail: dict[str, Any] = Field(default_factory=dict, description="numbers behind the choice")
    gatekeeper_ms: float | None = Field(
        default=None,
        description="time this request spent in scoring, queueing included (also when it was shed or "
        "timed out); None without a gatekeeper",
    )
    queue_ms: float | None = Field(default=None, description="of gatekeeper_ms, the wait for its batch")
    batch_size: int | None = Field(default=None, description="requests in the forward that scored it")
    truncated: bool = Field(default=False, description="the gatekeeper scored a truncated prompt")
    fail_safe_reason: str | None = None
    reason: str | None = Field(
        default=None,
        description="why the fail-safe tier was used, as a code: overload or loading (shed: the "
        "gatekeeper was busy or not ready), timeout, load_failed, error, invalid_scores, "
        "invalid_request (the gatekeeper cannot read the messages), missing_head (no score for a "
        "tier's target), policy_error; None when the policy decided",
    )
    overrides: list[str] = Field(default_factory=list, description="why the planned tier was changed")
    attempts: int = 0
    fallbacks_used: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list, description="'tier: ErrorType' per failed attempt")


class Usage(BaseModel):
    """Token counts of the answer, as the provider (or the local tier) reported them."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int | None = Field(default=None, description="prompt tokens billed; None when unknown")
    completion_tokens: int | None = Field(default=None, description="answer tokens; None when unknown")


class PromptMessage(BaseModel):
    """One captured chat message reduced to text (only with ``log_prompts``)."""

    model_config = ConfigDict(extra="forbid")

    role: str = Field(description="system, developer, user, assistant, tool or function")
    content: str = Field(description="the message's text; image, audio and file parts are left out")


class Outcome(BaseModel):
    """How good the answer was: empty when written, filled by a user's own feedback or a judge."""

    model_config = ConfigDict(extra="forbid")

    correct: bool | None = Field(default=None, description="the answer was right; None when not graded")
    quality: float | None = Field(default=None, ge=0.0, le=1.0, description="graded score in [0, 1]")
    source: str | None = Field(default=None, description="who graded it (a judge model, 'user', ...)")


class AuditAnswer(BaseModel):
    """The reference tier's answer to an audited request (see the router's ``audit`` option)."""

    model_config = ConfigDict(extra="forbid")

    tier: str = Field(description="the reference tier asked")
    target: str = Field(description="its gatekeeper target")
    model: str = Field(description="its LiteLLM model string")
    response: str | None = Field(default=None, description="its answer text; None when it failed")
    latency_ms: float | None = Field(default=None, description="time to its answer")
    usage: Usage | None = Field(default=None, description="its token counts")
    error: str | None = Field(default=None, description="why there is no answer (redacted)")


class DecisionRecord(BaseModel):
    """One routed call as the router logs it (one JSON line); see the module docstring."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = Field(default=VERSION, description="schema version of this record")
    id: str = Field(description="SHA-256 (hex) of the prompt's text: the same question, the same id")
    ts: str = Field(description="UTC ISO-8601 time the record was written")
    router: str | None = Field(default=None, description="the router's name")
    decision: Decision | None = Field(
        default=None,
        description="the routing decision (scores, tier, model, policy params); None if "
        "the call stopped before one was made",
    )
    target: str | None = Field(default=None, description="gatekeeper target of the tier that answered")
    stream: bool = Field(default=False, description="the caller asked for a stream")
    latency_ms: float | None = Field(default=None, description="to the response, or a stream's first chunk")
    usage: Usage | None = Field(default=None, description="the answer's token counts when known")
    error: str | None = Field(default=None, description="set when no tier answered (redacted)")
    split: str | None = Field(
        default=None, description="train/validation/test; None: the offline tools assign one by id"
    )
    messages: list[PromptMessage] | None = Field(
        default=None, description="the prompt as text; only with log_prompts (off by default)"
    )
    response: str | None = Field(default=None, description="the answer's text; only with log_prompts")
    outcome: Outcome | None = Field(
        default=None, description="the answer's grade: a slot for the user's own feedback"
    )
    audit: AuditAnswer | None = Field(default=None, description="the reference tier's answer, if audited")
    nonfinite: list[str] | None = Field(
        default=None, description="paths of non-finite numbers written as null"
    )
    log_error: str | None = Field(default=None, description="why the record lost its decision")

    @model_validator(mode="before")
    @classmethod
    def _unscored(cls, data: Any) -> Any:
        """A line whose scores were not finite (written as null) keeps its place, not its decision:
        reading it back must not fail the whole log, and a score that was NaN is no score."""
        paths = data.get("nonfinite") if isinstance(data, dict) else None
        if paths and any(str(p).startswith((".decision.scores", ".decision.raw_scores")) for p in paths):
            return {**data, "decision": None}
        return data


def text_messages(messages: Any) -> list[dict[str, str]] | None:
    """``messages`` as ``{"role", "content"}`` text pairs; None when they are not valid messages."""
    try:
        return normalize_messages(messages).messages
    except MessagesError:
        return None


def prompt_id(messages: Any) -> str:
    """SHA-256 of the prompt's text (role and content of each message, canonical JSON).

    Malformed messages still get an id (of their JSON, else one shared id): every routed call has one.
    """
    text = text_messages(messages)
    try:
        canonical = json.dumps(
            messages if text is None else text, ensure_ascii=False, sort_keys=True, default=str
        )
    except (RecursionError, TypeError, ValueError):  # nested too deeply, or keys JSON cannot hold
        canonical = "<malformed messages>"
    return hashlib.sha256(canonical.encode("utf-8", "replace")).hexdigest()
