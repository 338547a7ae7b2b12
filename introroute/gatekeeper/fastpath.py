"""The scoring forward without PEFT's per-call machinery: plain layers, LoRA on the [INTRO] rows only.

Why (profiled with ``benchmarks/scoring_overhead.py``): a scoring forward through the PEFT model
cost 15-25% more than a plain prefill on 32-64-token prompts, far above the one extra position
(1.6% at 64 tokens). The fixed per-call costs were:

- the LM head run at the ``[INTRO]`` position (``logits_to_keep=1``), whose logits nobody reads:
  one 49k x 576 matrix product, ~10 ms on one core, as much as ~4 prompt tokens;
- PEFT's activated-LoRA bookkeeping on every call: a Python search for the invocation tokens in
  every row, forward pre-hooks registered on (and removed from) every adapted projection after a
  walk over all modules, and in each of the 60 projections a position mask, a boolean gather and
  a scattered add.

In our forward the introspective tokens are always the last ``k`` positions of every row (prompts
are left-padded), so none of that search is needed: each adapted projection adds its LoRA update
to a slice of its output. :class:`IntroView` is a second module tree over the plain view's
tensors (no weight is copied) in which each PEFT-adapted projection is replaced by
:class:`TailLoRALinear`, which reads PEFT's own LoRA parameters, so a loaded or trained adapter
is used as is. It calls the decoder only; the caller applies the LM head where logits are needed.

Prompt positions go through exactly the base layers, in the same order, so their hidden states,
KV cache and logits stay bit-identical to the base model's (tests/test_gatekeeper.py). Anything
PEFT can do that this path does not model (DoRA, LoRA biases, several adapters, disabled adapters,
training) is left to the PEFT path: :meth:`IntroView.build` returns ``None``, or
:meth:`IntroView.usable` says no for that call.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from peft import PeftModel
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.tuners.trainable_tokens.layer import TrainableTokensLayer
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import DynamicCache, PreTrainedModel

ADAPTER = "default"


class TailLoRALinear(torch.nn.Module):
    """A base linear layer whose output on the last ``k`` positions gets the LoRA update.

    Written as few tensor calls as possible, holding the weight tensors directly rather than
    calling PEFT's ``lora_A``/``lora_B`` modules: at ~30 tokens each extra call in the 60 adapted
    projections is a measurable share of the forward. The base product is the base layer's own
    ``F.linear``, so the prompt positions' outputs are bit-identical to it.
    """

    def __init__(self, base: torch.nn.Linear, lora: LoraLinear, k: int) -> None:
        super().__init__()
        self.base = base
        # Plain attributes (the Parameter objects themselves, updated in place by training and
        # loading); IntroLM rebuilds the view when the model is moved or cast.
        self.__dict__["_w"], self.__dict__["_bias"] = base.weight, base.bias
        self.__dict__["_a"], self.__dict__["_b"] = lora.lora_A[ADAPTER].weight, lora.lora_B[ADAPTER].weight
        self.scaling = float(lora.scaling[ADAPTER])
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self._w, self._bias)
        k = self.k
        if self._a.dtype != x.dtype:  # fp32 master weights over a half-precision base (training)
            # as PEFT: the update in the adapter's dtype, added there, rounded once to the output's
            update = F.linear(F.linear(x[:, -k:].to(self._a.dtype), self._a), self._b) * self.scaling
            out[:, -k:] = (out[:, -k:] + update).to(out.dtype)
        elif x.shape[0] == 1:  # one row: 2-D products, the add fused into the second
            out[0, -k:].addmm_(F.linear(x[0, -k:], self._a), self._b.t(), alpha=self.scaling)
        else:
            out[:, -k:].add_(F.linear(F.linear(x[:, -k:], self._a), self._b), alpha=self.scaling)
        return out


def _shallow_tree(module: torch.nn.Module) -> torch.nn.Module:
    """A new module tree with the same parameters and buffers (the tensors are shared, not copied)
    and its own module, parameter, buffer and hook dictionaries, so replacing a submodule of the
    copy leaves the original untouched."""
    clone = copy.copy(module)
    for name, value in vars(module).items():
        if isinstance(value, OrderedDict | dict):
            clone.__dict__[name] = type(value)(value)
    for name, child in module._modules.items():
        if child is not None:
            clone._modules[name] = _shallow_tree(child)
    return clone


def _supported(layer: LoraLinear) -> bool:
    return (
        list(layer.lora_A) == [ADAPTER]
        and layer.active_adapters == [ADAPTER]
        and not layer.use_dora.get(ADAPTER, False)
        and not layer.lora_bias.get(ADAPTER, False)
        and not layer.fan_in_fan_out
        and not layer.merged
        and layer.lora_B[ADAPTER].bias is None
        and isinstance(layer.get_base_layer(), torch.nn.Linear)
    )


class IntroView:
    """The decoder of the plain view with each PEFT-adapted projection replaced; see the module doc."""

    def __init__(
        self,
        decoder: torch.nn.Module,
        tuner_layers: list[BaseTunerLayer],
        intro_rows: tuple[torch.nn.Parameter, list[int]] | None,
        intro_ids: list[int],
    ) -> None:
        self.decoder = decoder
        self._tuner_layers = tuner_layers
        self._intro_rows = intro_rows
        self._intro_ids = torch.tensor(intro_ids, dtype=torch.long)

    @classmethod
    def build(cls, peft_model: PeftModel, plain: PreTrainedModel, intro_ids: list[int]) -> IntroView | None:
        """The view for ``peft_model``'s adapter, or ``None`` when it uses something not modelled here."""
        base = peft_model.get_base_model()
        peft_decoder, plain_decoder = base.get_decoder(), plain.get_decoder()
        decoder = _shallow_tree(plain_decoder)
        k = len(intro_ids)
        tuner_layers: list[BaseTunerLayer] = []
        intro_rows = None
        for name, module in peft_decoder.named_modules():
            if isinstance(module, TrainableTokensLayer):
                if module.token_indices.get(ADAPTER) is None or list(module.token_indices) != [ADAPTER]:
                    return None
                if module is not _embedding_layer(peft_decoder):
                    return None
                order = [module.token_indices[ADAPTER].index(i) for i in intro_ids]
                intro_rows = (module.trainable_tokens_delta[ADAPTER], order)
                tuner_layers.append(module)
            elif isinstance(module, LoraLinear):
                if not _supported(module):
                    return None
                parent_name, _, attr = name.rpartition(".")
                parent = decoder.get_submodule(parent_name)
                replaced = getattr(parent, attr)
                if not isinstance(replaced, torch.nn.Linear):
                    return None
                setattr(parent, attr, TailLoRALinear(replaced, module, k))
                tuner_layers.append(module)
            elif isinstance(module, BaseTunerLayer):
                return None  # a tuner this path does not know
        return cls(decoder, tuner_layers, intro_rows, intro_ids)

    def usable(self) -> bool:
        """True unless PEFT's adapters are disabled (``disable_adapter()``) or switched."""
        return all(
            not layer.disable_adapters and layer.active_adapters == [ADAPTER] for layer in self._tuner_layers
        )

    def _embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        embeds = self.decoder.get_input_embeddings()(input_ids)
        k = len(self._intro_ids)
        if self._intro_rows is not None:
            delta, order = self._intro_rows
            rows = delta[order].to(embeds.dtype)
            scale = getattr(self.decoder.get_input_embeddings(), "embed_scale", None)
            if scale is not None:  # Gemma's scaled embedding, applied as PEFT's trainable tokens do
                rows = rows * scale.to(rows.dtype)
            embeds[:, -k:] = rows
        return embeds

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: DynamicCache | None,
    ) -> Any:
        """Final (normed) hidden states ``[B, T, D]`` of prompt + introspective tokens."""
        return self.decoder(
            inputs_embeds=self._embeddings(input_ids),
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=cache is not None,
        ).last_hidden_state


def _embedding_layer(decoder: torch.nn.Module) -> Any:
    embedding = decoder.get_input_embeddings()
    return getattr(embedding, "token_adapter", embedding)
