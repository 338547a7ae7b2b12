"""The gatekeeper's hyper-parameters, one small dataclass (as ``peft.LoraConfig`` is for LoRA)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from introroute.gatekeeper.heads import DEFAULT_VERBALISED_TOKENS, HEADS, LINEAR, VERBALISED

SELF_TARGET = "self"
# PEFT's own default for Llama-family models. Every adapted projection costs a little fixed
# work per forward (activated LoRA selects the [INTRO] rows), which matters for short prompts.
DEFAULT_TARGET_MODULES = ("q_proj", "v_proj")
PAPER_TARGET_MODULES = ("q_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""IntroLM's placement: attention query/output and the MLP; keys and values stay frozen."""


@dataclass
class IntroConfig:
    """What an IntroLM adapter is made of; saved next to the adapter as JSON.

    ``targets`` name the models whose success the head predicts: ``"self"`` is the gatekeeper's own
    base model, other names are models as written in routing logs. ``num_intro_tokens`` > 1 appends
    several distinct introspective tokens whose final hidden states are mean-pooled.

    ``prefix_cache`` is a serving setting, not part of what the adapter learned: score-only
    forwards reuse the chat template head's KV cache, prefilled once per loaded gatekeeper
    (:mod:`introroute.gatekeeper.prefix`); False runs every prompt in full. Scores agree either
    way to fp32 rounding.

    ``head`` picks how P(success) is read at ``[INTRO]`` (:mod:`introroute.gatekeeper.heads`):
    ``"linear"`` (a trained linear head, one output per target) or ``"verbalised"`` (the LM's own
    next-token odds of ``verbalised_tokens[0]`` against ``verbalised_tokens[1]``; one target only,
    and servable by llama.cpp).
    """

    targets: list[str] = field(default_factory=lambda: [SELF_TARGET])
    num_intro_tokens: int = 1
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))
    layers_to_transform: list[int] | None = None
    train_intro_embedding: bool = True
    max_context: int = 2048
    seed: int = 0
    prefix_cache: bool = True
    head: str = LINEAR
    verbalised_tokens: list[str] = field(default_factory=lambda: list(DEFAULT_VERBALISED_TOKENS))

    def __post_init__(self) -> None:
        if not self.targets or len(set(self.targets)) != len(self.targets):
            raise ValueError(f"targets must be a non-empty list of distinct names, got {self.targets!r}")
        if self.num_intro_tokens < 1:
            raise ValueError(f"num_intro_tokens must be >= 1, got {self.num_intro_tokens}")
        if self.max_context <= self.num_intro_tokens:
            raise ValueError(f"max_context must exceed num_intro_tokens, got {self.max_context}")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0 (0: no LoRA), got {self.lora_r}")
        if not self.uses_lora and not self.train_intro_embedding:
            raise ValueError("without LoRA (lora_r=0 or no target_modules) the [INTRO] embedding must train")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.head == VERBALISED and len(self.targets) != 1:
            raise ValueError(f"the verbalised head reads one target from the LM's tokens, got {self.targets}")
        if len(self.verbalised_tokens) != 2 or len(set(self.verbalised_tokens)) != 2:
            raise ValueError(f"verbalised_tokens must be two distinct words, got {self.verbalised_tokens!r}")

    @property
    def uses_lora(self) -> bool:
        """False for the ablation "[INTRO] embedding + head only": ``lora_r=0`` or no target modules."""
        return self.lora_r > 0 and bool(self.target_modules)

    @property
    def intro_tokens(self) -> list[str]:
        """The special tokens' texts: ``[INTRO]``, then ``[INTRO_1]``... when k > 1."""
        return ["[INTRO]"] + [f"[INTRO_{i}]" for i in range(1, self.num_intro_tokens)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IntroConfig:
        return cls(**data)
