"""Tiny random models of every architecture the gatekeeper supports, as a new user would save them.

Each is an HF directory (config + safetensors + the packaged SmolLM2 tokenizer) that
``load_base`` loads like any downloaded checkpoint, so the invariant tests run each architecture's
real transformers code path (Qwen2's q/k/v biases, Qwen3's q/k norms, Mistral's and Gemma 3's
sliding windows, Gemma 3's scaled embeddings and soft-capped logits) in well under a second.
Sliding windows are 8 tokens, shorter than the test prompts, so the windowed masks are exercised.
``llama-wordlevel`` is the original tiny Llama with its word-level tokenizer (data_support.py).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

ARCHITECTURES = ["llama-wordlevel", "llama", "qwen2", "qwen3", "mistral", "gemma3"]
SLIDING_WINDOW = 8


@cache
def smollm2_tokenizer() -> Any:
    """The packaged SmolLM2 tokenizer: from the converted cache when present (0.2 s), else the GGUF (6 s)."""
    from transformers import AutoTokenizer

    from introroute.gatekeeper.loading import DEFAULT_BASE, gguf_cache_dir, packaged_gguf

    gguf = packaged_gguf(DEFAULT_BASE)
    converted = gguf_cache_dir(gguf)
    if (converted / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(converted)
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def tiny_config(arch: str, tokenizer: Any) -> Any:
    """A 2-layer, 64-wide config of ``arch``; tied and untied LM heads both occur across the set."""
    from transformers import Gemma3TextConfig, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    common: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if arch == "llama":
        return LlamaConfig(**common, tie_word_embeddings=False)
    if arch == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=True)
    if arch == "qwen3":
        return Qwen3Config(**common, head_dim=16, tie_word_embeddings=False)
    if arch == "mistral":
        return MistralConfig(**common, sliding_window=SLIDING_WINDOW, tie_word_embeddings=False)
    if arch == "gemma3":
        return Gemma3TextConfig(
            **common,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=SLIDING_WINDOW,
            layer_types=["sliding_attention", "full_attention"],
            final_logit_softcapping=30.0,
            tie_word_embeddings=True,
        )
    raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHITECTURES}")


def save_tiny_model(arch: str, directory: Path) -> Path:
    """Write a tiny random ``arch`` model and its tokenizer to ``directory`` (seeded: same each run)."""
    import torch
    from transformers import AutoModelForCausalLM

    if arch == "llama-wordlevel":
        from data_support import build_tiny_lm

        model, tokenizer = build_tiny_lm()
    else:
        tokenizer = smollm2_tokenizer()
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(tiny_config(arch, tokenizer), dtype=torch.float32).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
