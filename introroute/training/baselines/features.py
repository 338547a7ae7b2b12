"""Frozen-model features of conversations, cached on disk so each is computed once.

Why a cache: a frozen-feature baseline is refit (another C, another target set) and evaluated
far more often than its features change, and a SmolLM2 forward costs about a second per MMLU
prompt on two shared cores. Why keys are a hash of the messages, not record ids: the baseline
interface takes conversations, and the same prompt has the same features whichever log or id it
came from (in the vendored logs the two are one-to-one). The extractor's identity (model weights
fingerprint, truncation) names the file, so features of another model are never mixed in.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from introroute.errors import DataError
from introroute.gatekeeper.loading import cache_dir
from introroute.scoring import Messages

Extract = Callable[[list[Messages]], np.ndarray]


def conversation_key(messages: Messages) -> str:
    """A stable key of a conversation's content (roles and texts)."""
    text = json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def default_cache_path(extractor: str) -> Path:
    """``$INTROROUTE_CACHE/features/<extractor>.safetensors``."""
    return cache_dir() / "features" / f"{extractor}.safetensors"


class FeatureCache:
    """Rows of features keyed by :func:`conversation_key`, in one safetensors file.

    New rows are computed in chunks of ``chunk`` conversations and the file is rewritten after
    each chunk, so a run killed halfway keeps what it had computed.
    """

    def __init__(self, path: Path, extractor: str, chunk: int = 512) -> None:
        self.path = path
        self.extractor = extractor
        self.chunk = chunk
        self.rows: dict[str, np.ndarray] = {}
        if path.is_file():
            self._read()

    def _read(self) -> None:
        try:
            with safe_open(str(self.path), framework="numpy") as handle:
                meta = handle.metadata() or {}
                features = handle.get_tensor("features")
        except (OSError, SafetensorError) as exc:
            raise DataError(f"{self.path}: unreadable feature cache ({exc}); delete it to recompute") from exc
        if meta.get("extractor") != self.extractor:
            raise DataError(
                f"{self.path}: features of {meta.get('extractor')!r}, not {self.extractor!r}; "
                "delete it to recompute"
            )
        keys = json.loads(meta["keys"])
        self.rows = dict(zip(keys, features, strict=True))

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.rows)
        metadata = {"extractor": self.extractor, "keys": json.dumps(keys)}
        tmp = self.path.with_suffix(".tmp")
        save_file({"features": np.stack([self.rows[k] for k in keys])}, str(tmp), metadata=metadata)
        os.replace(tmp, self.path)

    def get(self, conversations: Sequence[Messages], extract: Extract) -> np.ndarray:
        """``[N, dim]`` features (N > 0); rows not cached yet come from ``extract`` and are cached."""
        keys = [conversation_key(c) for c in conversations]
        todo = {k: c for k, c in zip(keys, conversations, strict=True) if k not in self.rows}
        pending = list(todo.items())
        for start in range(0, len(pending), self.chunk):
            part = pending[start : start + self.chunk]
            features = np.asarray(extract([c for _, c in part]), dtype=np.float32)
            self.rows.update(zip([k for k, _ in part], features, strict=True))
            self._write()
        return np.stack([self.rows[k] for k in keys])
