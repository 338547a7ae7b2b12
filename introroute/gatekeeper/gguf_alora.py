"""Export a gatekeeper for llama.cpp: a base GGUF with ``[INTRO]`` and an activated-LoRA GGUF.

llama.cpp serves activated LoRA natively (GGUF key ``adapter.alora.invocation_tokens``): the
adapter is applied from the last occurrence of the invocation tokens on, so the prompt's KV cache
is the base model's and llama-server keeps it when the next request on the slot switches the
adapter off. What an engine returns is token probabilities, so the score must be a ratio of two
tokens' probabilities at ``[INTRO]``:

- a **verbalised** head (:mod:`introroute.gatekeeper.heads`) is that already: P(yes)/(P(yes)+P(no));
- a **linear** head is folded into the LM head: per target ``t`` one appended vocabulary row
  ``[INTRO_SCORE_t]`` = the head's weight row, plus one all-zero row ``[INTRO_ZERO]``, so
  ``logit(score_t) - logit(zero) = w_t . h`` and the head's bias is sent as a logit bias.

Either way a target is a ``(positive, negative, bias)`` triple; P(success) =
``sigmoid(logit[positive] + bias - logit[negative])``, which llama-server returns when the request
biases both tokens far above the rest and keeps the top two (see :mod:`introroute.router.llama_cpp`).

Files written (``directory``):

    base.gguf             the base GGUF, vocabulary extended: [INTRO] (its trained embedding row),
                          and for a linear head the score rows (same tensor types as the source)
    alora.gguf            the LoRA matrices (fp32), alpha, invocation tokens = the [INTRO] ids
    introroute_gguf.json  targets, token ids, biases, base identity: what a client needs
    tokenizer files       the gatekeeper's tokenizer, so a client encodes prompts spoof-proof
                          (:mod:`introroute.gatekeeper.prompting`) without loading the model
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gguf
import numpy as np
from peft.tuners.lora import LoraLayer

from introroute.errors import GatekeeperError
from introroute.gatekeeper.heads import VERBALISED, VerbalisedHead

if TYPE_CHECKING:
    from introroute.gatekeeper.model import IntroLM

BASE_FILE = "base.gguf"
ADAPTER_FILE = "alora.gguf"
META_FILE = "introroute_gguf.json"
FORMAT = "gguf-alora"
# llama.cpp's llama converter permutes the q/k projections' output rows for its RoPE layout
# (convert_hf_to_gguf.py, LlamaModel.permute); LoRA B matrices of those projections follow.
_PERMUTED = {"q_proj": "n_head", "k_proj": "n_kv_head"}
_PERMUTING_ARCHS = {"llama"}


def export_gguf_alora(gk: IntroLM, directory: str | Path, base_gguf: str | Path) -> Path:
    """Write ``gk`` as a llama.cpp base GGUF + activated-LoRA GGUF + client metadata.

    ``base_gguf`` is the GGUF of ``gk``'s base model (llama.cpp's own conversion of the same
    weights): its tensors are copied as they are, only the vocabulary grows.
    """
    if not gk.config.uses_lora:
        raise GatekeeperError("a gatekeeper without LoRA serves from a plain model: use export_plain")
    if len(gk.intro_ids) != 1:
        raise GatekeeperError("llama.cpp returns one position's logits: export needs num_intro_tokens=1")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    reader = gguf.GGUFReader(str(base_gguf))
    arch = str(reader.get_field(gguf.Keys.General.ARCHITECTURE).contents())
    tokens = list(reader.get_field(gguf.Keys.Tokenizer.LIST).contents())
    if len(tokens) != gk.base_vocab_size:
        raise GatekeeperError(
            f"{base_gguf} has {len(tokens)} tokens, the gatekeeper's base {gk.base_vocab_size}: another model"
        )
    gk.eval()  # the trained [INTRO] rows merged into the embedding
    embedding = gk.plain.get_input_embeddings().weight
    rows = {
        name: embedding[i].detach().float().cpu().numpy()
        for name, i in zip(gk.config.intro_tokens, gk.intro_ids, strict=True)
    }
    targets = _score_rows(gk, len(tokens) + len(rows), rows)
    _write_base(reader, out / BASE_FILE, rows)
    _write_adapter(gk, arch, out / ADAPTER_FILE)
    gk.tokenizer.save_pretrained(out)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "targets": targets,
        "intro_token_ids": gk.intro_ids,
        "head": gk.config.head,
        "base": {"name": gk.base_name, "fingerprint": gk.base_fingerprint, "gguf": Path(base_gguf).name},
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _score_rows(gk: IntroLM, first_new: int, rows: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Each target's ``(positive, negative, bias)``; adds the linear head's rows to ``rows``."""
    head = gk.head
    if gk.config.head == VERBALISED:
        assert isinstance(head, VerbalisedHead)
        positive, negative = head.token_ids
        return {gk.targets[0]: {"positive": positive, "negative": negative, "bias": 0.0}}
    if getattr(gk.plain.config.get_text_config(), "final_logit_softcapping", None) is not None:
        raise GatekeeperError("the model soft-caps its logits: a linear head cannot be folded into them")
    weight = head.weight.detach().float().cpu().numpy()
    bias = head.bias.detach().float().cpu().numpy()
    zero_id = first_new + len(gk.targets)
    targets = {}
    for i, target in enumerate(gk.targets):
        rows[f"[INTRO_SCORE_{i}]"] = weight[i]
        targets[target] = {"positive": first_new + i, "negative": zero_id, "bias": float(bias[i])}
    rows["[INTRO_ZERO]"] = np.zeros_like(weight[0])
    return targets


def _write_base(reader: gguf.GGUFReader, path: Path, rows: dict[str, np.ndarray]) -> None:
    """Copy the base GGUF with ``rows`` appended to the vocabulary and to every vocabulary matrix."""
    n_old = len(reader.get_field(gguf.Keys.Tokenizer.LIST).contents())
    arch = str(reader.get_field(gguf.Keys.General.ARCHITECTURE).contents())
    writer = gguf.GGUFWriter(str(path), arch=arch, endianess=reader.endianess)
    grown = {
        gguf.Keys.Tokenizer.LIST: list(rows),
        gguf.Keys.Tokenizer.TOKEN_TYPE: [int(gguf.TokenType.CONTROL)] * len(rows),
        gguf.Keys.Tokenizer.SCORES: [0.0] * len(rows),
    }
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        value = field.contents()
        if field.name in grown:
            value = list(value) + grown[field.name]
        elif field.name == gguf.Keys.LLM.VOCAB_SIZE.format(arch=arch):
            value = n_old + len(rows)
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, field.types[0], sub_type=sub_type)
    extra = np.stack(list(rows.values())).astype(np.float32)
    tensors = []
    for tensor in reader.tensors:
        data = tensor.data
        if tensor.name in ("token_embd.weight", "output.weight") and int(tensor.shape[-1]) == n_old:
            try:
                added = gguf.quants.quantize(extra, tensor.tensor_type)
            except NotImplementedError as exc:
                raise GatekeeperError(f"{tensor.name} is {tensor.tensor_type.name}: {exc}") from None
            data = np.concatenate([np.asarray(data).reshape(n_old, -1), added.reshape(len(rows), -1)])
        tensors.append(data)
        writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for data in tensors:
        writer.write_tensor_data(data, tensor_endianess=reader.endianess)
    writer.close()


def _write_adapter(gk: IntroLM, arch: str, path: Path) -> None:
    """The LoRA matrices under llama.cpp's tensor names, with alpha and the invocation tokens."""
    config = gk.plain.config.get_text_config()
    n_layers = int(config.num_hidden_layers)
    names = gguf.get_tensor_name_map(_model_arch(arch), n_layers)
    heads = {"n_head": config.num_attention_heads, "n_kv_head": config.num_key_value_heads}
    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(gk.config.lora_alpha))
    writer.add_key_value(
        gguf.Keys.Adapter.ALORA_INVOCATION_TOKENS,
        list(gk.intro_ids),
        gguf.GGUFValueType.ARRAY,
        sub_type=gguf.GGUFValueType.UINT32,
    )
    prefix = "base_model.model."
    for module_name, module in gk.peft_model.named_modules():
        if not isinstance(module, LoraLayer) or "default" not in module.lora_A:
            continue
        hf_name = module_name.removeprefix(prefix)
        target = names.get_name(hf_name)
        if target is None:
            raise GatekeeperError(f"no llama.cpp tensor for {hf_name} ({arch})")
        a = module.lora_A["default"].weight.detach().float().cpu().numpy()
        b = module.lora_B["default"].weight.detach().float().cpu().numpy()
        projection = hf_name.rsplit(".", 1)[-1]
        if arch in _PERMUTING_ARCHS and projection in _PERMUTED:
            b = _permute(b, int(heads[_PERMUTED[projection]]))
        writer.add_tensor(f"{target}.weight.lora_a", np.ascontiguousarray(a))
        writer.add_tensor(f"{target}.weight.lora_b", np.ascontiguousarray(b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's rotary layout of a q/k projection's output rows (``LlamaModel.permute``)."""
    shape = rows.shape
    return rows.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _model_arch(name: str) -> gguf.MODEL_ARCH:
    for arch, arch_name in gguf.MODEL_ARCH_NAMES.items():
        if arch_name == name:
            return arch
    raise GatekeeperError(f"gguf does not know the architecture {name!r}")
