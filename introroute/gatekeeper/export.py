"""Serve a no-LoRA gatekeeper from an inference engine that serves plain models (vLLM, llama.cpp).

The ablation without LoRA (``lora_r=0``: the ``[INTRO]`` embedding row and the head are all that
train) has no adapter weights: its score is the head applied to the *plain* model's final hidden
state at ``[INTRO]``, once that model's vocabulary holds the trained ``[INTRO]`` row. So
:func:`export_plain` writes exactly that model (an ordinary HF checkpoint, tokenizer included),
and any engine that returns the last position's final hidden state (vLLM's pooling runner with
LAST pooling, unnormalised) computes what :meth:`IntroLM.scores` computes; :func:`head_scores`
applies the head on the client. The head lives in an ``introroute/`` subdirectory: an engine loads
every top-level ``*.safetensors`` file of a model directory as weights (vLLM 0.32 refused the
export with "no module or parameter named 'bias'" while the head sat beside the model). A LoRA
gatekeeper cannot be exported this way: its adapter
changes the ``[INTRO]`` position's hidden state, which a plain-model engine does not reproduce.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import load_file, save_file

from introroute.errors import GatekeeperError

if TYPE_CHECKING:
    from introroute.gatekeeper.model import IntroLM

HEAD_FILE = "introroute/head.safetensors"
LEGACY_HEAD_FILE = "introroute_head.safetensors"  # exports before the head moved out of engines' way
META_FILE = "introroute_engine.json"


def export_plain(gk: IntroLM, directory: str | Path) -> Path:
    """Write ``gk`` (no LoRA) as a plain HF model + tokenizer + head, for an engine to serve."""
    if gk.config.uses_lora:
        raise GatekeeperError(
            "only a gatekeeper trained without LoRA (--lora-r 0) can be served by a plain-model engine: "
            "the activated LoRA changes the [INTRO] position's hidden state"
        )
    if gk.config.head != "linear":
        raise GatekeeperError("export_plain writes a linear head; a verbalised gatekeeper exports to GGUF")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    gk.eval()  # the trained [INTRO] rows are merged in place into the plain model's embedding
    gk.plain.save_pretrained(out, safe_serialization=True)
    gk.tokenizer.save_pretrained(out)
    head = {k: v.detach().float().cpu().numpy() for k, v in gk.head.state_dict().items()}
    (out / HEAD_FILE).parent.mkdir(exist_ok=True)
    save_file(head, str(out / HEAD_FILE))
    meta: dict[str, Any] = {
        "targets": gk.targets,
        "intro_token_ids": gk.intro_ids,
        "pooling": "mean of the final hidden states at the introspective tokens (k=1: LAST)",
        "base": {"name": gk.base_name, "fingerprint": gk.base_fingerprint},
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def engine_prompt_ids(gk: IntroLM, messages: Any) -> list[int]:
    """Token ids to send to the engine: the spoof-proof prompt, then the introspective tokens.

    Send ids, not text: the engine's own tokenisation of the rendered chat would turn user text
    such as ``[INTRO]`` into the special token (see :mod:`introroute.gatekeeper.prompting`).
    """
    return gk.encode(messages).ids + gk.intro_ids


def head_scores(hidden: np.ndarray, directory: str | Path) -> dict[str, np.ndarray]:
    """P(success) per target from the engine's pooled hidden states ``[N, hidden]`` (float32 head)."""
    out = Path(directory)
    head = load_file(str(out / HEAD_FILE if (out / HEAD_FILE).is_file() else out / LEGACY_HEAD_FILE))
    targets = json.loads((out / META_FILE).read_text())["targets"]
    logits = np.asarray(hidden, dtype=np.float32) @ head["weight"].T + head["bias"]
    probabilities = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return {target: probabilities[:, i] for i, target in enumerate(targets)}
