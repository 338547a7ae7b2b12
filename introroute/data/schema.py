"""The routing-log record: one query, the messages as sent, and what each target made of it.

Why one schema for both kinds of labels: imported outcomes of real LLMs (RouteLLM, RouterBench)
and self-labelled outcomes of the local model are trained on and evaluated together, so they must
agree on field names, on what "missing" means (``None``, never ``False``) and on the split of a
query id. ``extra="forbid"`` makes a typo in a log a loud error instead of a silently dropped label.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Split = Literal["train", "validation", "test", "test_unseen"]
"""``test_unseen`` holds MMLU subjects that no other split contains (unseen-subject generalisation)."""


class Message(BaseModel):
    """One chat message reduced to text, as the target model saw it."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str


class TargetOutcome(BaseModel):
    """What one target model did with the query. Unknown values are ``None``, never zero or False."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="The model that answered, as a LiteLLM model string or HF id.")
    correct: bool | None = Field(default=None, description="Graded outcome; None when not graded.")
    quality: float | None = Field(default=None, ge=0.0, le=1.0, description="Graded score in [0, 1].")
    response: str | None = None
    parsed: str | None = Field(
        default=None, description="The answer the grader read from the response (letter, yes/no, number)."
    )
    cost_usd: float | None = Field(default=None, ge=0.0)
    latency_s: float | None = Field(default=None, ge=0.0)
    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)


class RoutingRecord(BaseModel):
    """One line of a routing-log JSONL file."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="Stable across files: the same question has the same id.")
    dataset: str = Field(min_length=1)
    subject: str | None = None
    split: Split
    messages: list[Message] = Field(min_length=1)
    outcomes: dict[str, TargetOutcome] = Field(description="Keyed by target name, e.g. 'self'.")
    gold: str | None = Field(default=None, description="Reference answer (letter, yes/no, number).")
    meta: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> str:
        """One JSONL line without the ``None`` fields, so logs stay small and readable."""
        return self.model_dump_json(exclude_none=True)
