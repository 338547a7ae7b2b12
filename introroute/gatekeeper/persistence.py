"""Save and load IntroLM adapters: a standard PEFT adapter directory plus the head and metadata.

Layout of a saved adapter::

    adapter_config.json, adapter_model.safetensors   PEFT's own files (LoRA + [INTRO] embedding row)
    introroute_head.safetensors                      the linear head, one output per target
    introroute.json                                  IntroConfig, token ids, base identity

Reading is two steps, :func:`read` (the metadata and the base model) and :func:`load_weights` (into
the gatekeeper :meth:`IntroLM.build <introroute.gatekeeper.model.IntroLM.build>` made of them), so
this module never needs the model class (the model module imports this one). Only safetensors and
JSON are read: nothing is unpickled. PEFT's own loader would fall back to a
pickled ``adapter_model.bin`` (``torch.load``) when the safetensors file is missing, so the weights
are read here with safetensors alone, and any other layout is an :class:`AdapterError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import torch
from peft import PeftModel, set_peft_model_state_dict
from peft.utils import SAFETENSORS_WEIGHTS_NAME
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from introroute.errors import AdapterError, BaseModelMismatchError
from introroute.gatekeeper.config import IntroConfig
from introroute.gatekeeper.loading import DEFAULT_BASE, BaseModel, load_base

FORMAT_VERSION = 1
META_FILE = "introroute.json"
HEAD_FILE = "introroute_head.safetensors"


class SavedGatekeeper(Protocol):
    """What is saved of a gatekeeper and loaded into it (:class:`~introroute.gatekeeper.model.IntroLM`)."""

    peft_model: PeftModel
    head: torch.nn.Module
    config: IntroConfig
    intro_ids: list[int]
    trained: bool
    base_name: str
    base_fingerprint: str
    base_vocab_size: int

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...


@dataclass
class SavedAdapter:
    """An adapter directory read up to its weights: the base it loads onto and its config.

    ``directory`` is ``None`` for an untrained gatekeeper (no adapter shipped for the base).
    """

    base: BaseModel
    config: IntroConfig
    directory: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def default_adapter_dir(base: str = DEFAULT_BASE) -> Path | None:
    """The adapter shipped inside the package for ``base``, if any."""
    candidate = Path(str(resources.files("introroute") / "adapters" / base))
    return candidate if (candidate / META_FILE).is_file() else None


def save(model: SavedGatekeeper, directory: str | Path) -> None:
    """Write ``model``'s adapter, head and metadata to ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    # The base vocabulary was resized for [INTRO]; its new row lives in PEFT's trainable-token
    # delta, so the full embedding matrix need not be saved (and no hub lookup is attempted).
    # PEFT records the base's local path (a cache directory on this machine) and writes a model
    # card template; an adapter that ships must name its base instead, and introroute.json is
    # its card. The path is restored so the live model is unchanged.
    peft_config = model.peft_model.peft_config["default"]
    local_path, peft_config.base_model_name_or_path = peft_config.base_model_name_or_path, model.base_name
    try:
        model.peft_model.save_pretrained(str(out), save_embedding_layers=False)
    finally:
        peft_config.base_model_name_or_path = local_path
    (out / "README.md").unlink(missing_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.head.state_dict().items()}, str(out / HEAD_FILE))
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "intro_token_ids": model.intro_ids,
        "trained": model.trained,
        "base": {
            "name": model.base_name,
            "fingerprint": model.base_fingerprint,
            "vocab_size": model.base_vocab_size,
        },
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _read_meta(directory: Path) -> dict[str, Any]:
    path = directory / META_FILE
    if not path.is_file():
        raise AdapterError(f"{directory} is not an introroute adapter: {META_FILE} is missing")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise AdapterError(f"{path} must hold a JSON object, not a {type(meta).__name__}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise AdapterError(f"{path}: format_version {meta.get('format_version')!r} is not {FORMAT_VERSION}")
    for key in ("config", "intro_token_ids", "base"):
        if key not in meta:
            raise AdapterError(f"{path} lacks the key {key!r}")
    return meta


def read(
    adapter: str | Path | None,
    *,
    base: str | None = None,
    targets: list[str] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
) -> SavedAdapter:
    """An adapter's base (or ``base``) loaded on ``device`` in ``dtype`` and its config, checked;
    without an adapter (none given, none shipped for the base) an untrained one's."""
    directory = Path(adapter) if adapter is not None else default_adapter_dir(base or DEFAULT_BASE)
    if directory is None:
        base_model = load_base(base or DEFAULT_BASE, device=device, dtype=dtype)
        return SavedAdapter(base_model, IntroConfig(targets=targets or ["self"]))
    meta = _read_meta(directory)
    recorded = meta["base"]
    base_model = load_base(base or recorded["name"], device=device, dtype=dtype)
    if not base_model.matches(recorded["fingerprint"]):
        raise BaseModelMismatchError(
            f"adapter {directory} was trained on base {recorded['name']!r} (weights "
            f"{recorded['fingerprint']}), not on {base_model.name!r} (weights {base_model.fingerprint})"
        )
    try:
        config = IntroConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as exc:
        raise AdapterError(f"{directory / META_FILE}: bad config: {exc}") from exc
    if targets is not None and targets != config.targets:
        raise AdapterError(f"adapter {directory} predicts {config.targets}, not the requested {targets}")
    return SavedAdapter(base_model, config, directory, meta)


def load_weights(model: SavedGatekeeper, saved: SavedAdapter) -> None:
    """Fill ``model`` (built from ``saved.base`` and ``saved.config``) with the saved weights."""
    if saved.directory is None:
        return  # untrained: the fresh initialisation is the model
    if model.intro_ids != saved.meta["intro_token_ids"]:
        raise BaseModelMismatchError(
            f"adapter {saved.directory} expects [INTRO] token ids {saved.meta['intro_token_ids']}, "
            f"the base tokenizer gives {model.intro_ids}"
        )
    _load_weights(model, saved.directory, saved.meta)


def _load_weights(model: SavedGatekeeper, directory: Path, meta: dict[str, Any]) -> None:
    model.train()  # unmerge the [INTRO] row: the loaded delta must be merged, not the initial one
    weights = directory / SAFETENSORS_WEIGHTS_NAME
    if not weights.is_file():
        others = sorted(p.name for p in directory.glob("adapter_model.*"))
        found = f" (found {others}: only safetensors are loaded, pickles never are)" if others else ""
        raise AdapterError(f"{weights} is missing{found}")
    for path in (weights, directory / HEAD_FILE):
        try:
            state = load_file(str(path))
        except (OSError, SafetensorError) as exc:
            raise AdapterError(f"{path} is not a readable safetensors file: {exc}") from None
        try:
            if path is weights:  # the adapter was rebuilt from the saved config; fill in the weights
                result = set_peft_model_state_dict(model.peft_model, state)
                if getattr(result, "unexpected_keys", None):
                    raise AdapterError(f"{path}: unexpected adapter weights {result.unexpected_keys[:5]}")
            else:
                model.head.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise AdapterError(f"cannot load adapter weights from {path}: {exc}") from None
    model.eval()
    model.trained = bool(meta.get("trained", False))
