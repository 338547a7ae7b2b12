"""IntroLM: a causal LM that scores, during prefill, P(a target model answers the prompt well).

One scoring pass (the paper's design, arXiv 2601.03511) is one forward over

    chat-templated prompt + [INTRO]  ->  base + activated LoRA  ->  final hidden state at [INTRO]
                                                                 ->  linear head  ->  sigmoid

The token-conditional LoRA is PEFT's activated LoRA (``alora_invocation_tokens``): it is active
only from the introspective tokens on, so the prompt positions, their logits and their KV cache
are the base model's. Cropping the introspective positions off the cache leaves exactly the
cache a plain prefill would have built: the same prefill then serves local generation, which runs
on a plain view of the base model (same weight tensors, no adapter wrappers on the hot path).

Score-only forwards (scoring without a local answer, and every row of a batch of several) skip
the chat template's head: its KV cache is the base model's too, so it is prefilled once per
loaded gatekeeper and each forward runs only the prompt's own tokens and [INTRO] on top of it
(:mod:`introroute.gatekeeper.prefix`; ``IntroConfig.prefix_cache``).

This file is the model: how it is built, saved and loaded, and how a forward is computed. What
a caller gets from it lives beside it, as transformers keeps ``generate`` in a mixin: scores and
prefills in :mod:`~introroute.gatekeeper.scorer`, the local answer in
:mod:`~introroute.gatekeeper.generation`; training's split forward (prompt without gradients,
[INTRO] on top) is offline, in :mod:`introroute.training.forward`.

The model runs on one device in the base's dtype (:func:`~introroute.gatekeeper.loading.load_base`);
batches are built on the CPU and moved once, and what leaves the model (probabilities, the logits
decoding samples from) comes back to the CPU as float32, so callers never see a device tensor.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import torch
from peft import LoraConfig, PeftConfig, PeftModel, TrainableTokensConfig, get_peft_model
from peft.tuners.trainable_tokens.layer import TrainableTokensLayer
from transformers import AddedToken, AutoModelForCausalLM, DynamicCache, PreTrainedModel

from introroute.errors import GatekeeperError
from introroute.gatekeeper import persistence
from introroute.gatekeeper.config import IntroConfig
from introroute.gatekeeper.fastpath import IntroView
from introroute.gatekeeper.generation import LocalGenerationMixin
from introroute.gatekeeper.heads import VERBALISED, VerbalisedHead, verbalised_token_ids
from introroute.gatekeeper.loading import BaseModel
from introroute.gatekeeper.prefix import HeadCache, positions
from introroute.gatekeeper.prompting import PromptIds, encode_prompt
from introroute.gatekeeper.scorer import Prefill, ScorerMixin, ScoringFirst
from introroute.scoring import Messages

__all__ = ["Batch", "IntroLM", "IntroOutput", "Prefill"]  # Prefill: where it was defined before


class IntroOutput(NamedTuple):
    """What one scoring forward yields."""

    logits: torch.Tensor | None  # LM logits of the kept positions (None: none were asked for)
    head_logits: torch.Tensor  # [B, targets], before the sigmoid
    cache: DynamicCache | None  # the prompt positions' KV cache
    hidden: torch.Tensor  # final (normed) hidden states of the last prompt position and [INTRO]


@dataclass
class Batch:
    """Left-padded prompt ids: introspective tokens then sit at the same positions in every row."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lengths: torch.Tensor
    prompts: list[PromptIds] = field(default_factory=list)


class IntroLM(ScorerMixin, LocalGenerationMixin, torch.nn.Module):
    """The gatekeeper model. Build with :meth:`build` or :meth:`from_pretrained`.

    Scores with ``scores``/``score``/``scores_batch``/``prefill`` (:class:`ScorerMixin`) and
    answers locally with ``generate_from`` (:class:`LocalGenerationMixin`).
    """

    def __init__(
        self,
        peft_model: PeftModel,
        plain: PreTrainedModel,
        base: BaseModel,
        head: torch.nn.Module,
        config: IntroConfig,
        intro_ids: list[int],
        base_vocab_size: int,
    ) -> None:
        super().__init__()
        self.peft_model = peft_model
        self.plain = plain
        self.head = head
        self.config = config
        self.tokenizer = base.tokenizer
        self.base_name = base.name
        self.base_fingerprint = base.fingerprint
        self.intro_ids = intro_ids
        self.base_vocab_size = base_vocab_size
        self.trained = False
        # One scoring forward at a time; decode steps stand aside meanwhile (see ScoringFirst).
        self.turns = ScoringFirst()
        generation_eos = plain.generation_config.eos_token_id
        eos = generation_eos if isinstance(generation_eos, list) else [generation_eos]
        self.eos_ids = sorted({e for e in [*eos, self.tokenizer.eos_token_id] if e is not None})
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        )
        # Inference scoring without PEFT's per-call overhead (introroute.gatekeeper.fastpath).
        self.rebuild_fast_path()
        # The chat template head's KV cache (introroute.gatekeeper.prefix): computed once, under
        # the scoring lock, on the first score-only forward (the router's warm-up), read-only after.
        self._head_cache: HeadCache | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, base: BaseModel, config: IntroConfig | None = None) -> IntroLM:
        """Wrap a base model: add the introspective tokens, the activated LoRA and a fresh head."""
        config = config or IntroConfig()
        model, tokenizer = base.model, base.tokenizer
        base_vocab_size = model.get_input_embeddings().weight.shape[0]
        tokenizer.add_tokens(
            [AddedToken(t, special=True, normalized=False) for t in config.intro_tokens], special_tokens=True
        )
        intro_ids = [int(tokenizer.convert_tokens_to_ids(t)) for t in config.intro_tokens]
        needed = max(intro_ids) + 1
        if needed > base_vocab_size:
            # Deterministic initialisation (the mean embedding) so a saved adapter restores exactly.
            embeddings = model.get_input_embeddings().weight
            mean = embeddings.detach().mean(dim=0)
            model.resize_token_embeddings(needed, mean_resizing=False)
            with torch.no_grad():
                model.get_input_embeddings().weight[base_vocab_size:] = mean
                output = model.get_output_embeddings()
                if output is not None and output.weight.data_ptr() != embeddings.data_ptr():
                    output.weight[base_vocab_size:] = 0.0
        plain = _plain_view(model)
        hidden_size = model.config.get_text_config().hidden_size
        peft_config: PeftConfig = (
            LoraConfig(
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=list(config.target_modules),
                layers_to_transform=config.layers_to_transform,
                alora_invocation_tokens=intro_ids,
                trainable_token_indices=intro_ids if config.train_intro_embedding else None,
                task_type="CAUSAL_LM",
            )
            if config.uses_lora
            # The no-LoRA ablation: only the [INTRO] embedding row (and the head) learn.
            else TrainableTokensConfig(token_indices=intro_ids, task_type="CAUSAL_LM")
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            # Adapter weights in the base's dtype: with PEFT's default upcast to fp32, every adapted
            # projection would copy the whole prompt's activations to fp32 on each forward, for
            # the few [INTRO] rows it adapts. fit() upcasts what trains to fp32 master weights.
            peft_model = get_peft_model(model, peft_config, autocast_adapter_dtype=False)
            head = _new_head(config, plain, tokenizer, hidden_size)
        head.to(model.device)  # initialised on the CPU: the same head on every device
        intro_lm = cls(peft_model, plain, base, head, config, intro_ids, base_vocab_size)
        intro_lm.eval()
        return intro_lm

    def add_targets(self, targets: Sequence[str]) -> list[str]:
        """Grow the head by a fresh row for each target it lacks (a remote model added later).

        Why a row, not a new head: the rows share the [INTRO] hidden state, so a new model's
        head trains on top of the existing LoRA (``train --from-adapter A --heads-only``) while
        the existing rows are copied bit for bit. Returns the targets added.
        """
        new = [t for t in dict.fromkeys(targets) if t not in self.config.targets]
        if not new:
            return []
        old = self.head
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(self.config.seed + len(self.config.targets))
            extra = torch.nn.Linear(old.in_features, len(new))
            torch.nn.init.normal_(extra.weight, std=0.02)
            head = torch.nn.Linear(old.in_features, old.out_features + len(new)).to(old.weight.device)
            head.weight.copy_(torch.cat([old.weight.detach().float(), extra.weight.to(old.weight.device)]))
            head.bias.copy_(
                torch.cat([old.bias.detach().float(), torch.zeros(len(new), device=old.weight.device)])
            )
        self.head = head
        self.config = replace(self.config, targets=[*self.config.targets, *new])
        return new

    def _apply(self, fn: Any, recurse: bool = True) -> IntroLM:
        """``.to()``/``.half()``/...: the fast-path view holds its own buffer references, so
        it is rebuilt over the converted tensors."""
        super()._apply(fn, recurse)
        self.rebuild_fast_path()
        self._head_cache = None  # prefilled again, in the new dtype/device, when next needed
        return self

    def train(self, mode: bool = True) -> IntroLM:
        """Switch modes; for inference, merge the [INTRO] embedding row into the weights.

        PEFT's trainable-token layer otherwise rebuilds the whole embedding matrix (and the tied
        LM head) on every forward, which costs more than the prompt itself on a small model. The
        merged row belongs to a token the prompt never contains and generation never emits.
        """
        super().train(mode)
        for module in self.peft_model.modules():
            if isinstance(module, TrainableTokensLayer):
                if mode and module.merged:
                    module.unmerge()
                elif not mode and not module.merged:
                    _merge_in_place(module)
        return self

    def rebuild_fast_path(self) -> None:
        """Rebuild the fast-path view (:mod:`~introroute.gatekeeper.fastpath`) over the current
        parameter objects: it holds references to them, so whatever replaces them (a dtype or
        device change, PEFT's upcast for training) must call this."""
        self._view = IntroView.build(self.peft_model, self.plain, self.intro_ids)

    def upcast_trainable(self) -> None:
        """Deprecated: :func:`introroute.training.forward.upcast_trainable`."""
        _moved_to_training("upcast_trainable")(self)

    @classmethod
    def from_pretrained(
        cls,
        adapter: str | None = None,
        *,
        base: str | None = None,
        max_context: int | None = None,
        threads: int | None = None,
        targets: list[str] | None = None,
        prefix_cache: bool | None = None,
        device: str = "cpu",
        dtype: str = "float32",
    ) -> IntroLM:
        """Load a saved adapter (a directory), the shipped default, or a fresh untrained gatekeeper.

        ``adapter=None`` uses the default adapter shipped in the package when one exists for the
        base; otherwise an untrained gatekeeper (``trained`` is False; its scores mean nothing yet)
        with ``targets`` (default ``["self"]``). ``max_context`` and ``prefix_cache`` override the
        adapter's :class:`IntroConfig` values. ``device`` (cpu, cuda, cuda:N, mps) and ``dtype``
        (float32, bfloat16, float16) place the base model; an adapter trained in one precision
        loads in another (its base is identified by the checkpoint, not the loaded tensors).
        """
        if threads:
            torch.set_num_threads(threads)
        saved = persistence.read(adapter, base=base, targets=targets, device=device, dtype=dtype)
        model = cls.build(saved.base, saved.config)
        persistence.load_weights(model, saved)
        if max_context:
            model.config.max_context = max_context
        if prefix_cache is not None:
            model.config.prefix_cache = prefix_cache
        return model

    def save_pretrained(self, directory: str) -> None:
        """Write a PEFT adapter directory plus the head and token metadata (no pickle anywhere)."""
        persistence.save(self, directory)

    # ------------------------------------------------------------------ targets
    @property
    def targets(self) -> list[str]:
        return list(self.config.targets)

    @property
    def device(self) -> torch.device:
        """Where the base model's weights (and every forward) live."""
        return self.plain.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The base model's compute dtype (the head is float32 regardless)."""
        return self.plain.dtype

    # ------------------------------------------------------------------ encoding
    @property
    def max_prompt_tokens(self) -> int:
        return self.config.max_context - self.config.num_intro_tokens

    def encode(self, messages: Messages) -> PromptIds:
        """Chat-template and tokenise ``messages`` (validated, spoof-proof, left-truncated)."""
        # Safe on the callers' threads: encode_prompt never touches shared tokenizer state
        # (one frozen backend per tokenisation mode, see introroute.gatekeeper.prompting).
        return encode_prompt(self.tokenizer, messages, self.max_prompt_tokens)

    def collate(self, prompts: Sequence[PromptIds]) -> Batch:
        """Left-pad prompts into one batch, on the model's device (built on the CPU, moved once)."""
        width = max(len(p.ids) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt.ids) :] = torch.tensor(prompt.ids, dtype=torch.long)
            mask[row, width - len(prompt.ids) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        return Batch(ids, mask, mask.sum(dim=1), list(prompts))

    @staticmethod
    def _positions(mask: torch.Tensor) -> torch.Tensor:
        """Position ids that ignore left padding, as ``generate`` computes them."""
        return positions(mask)

    # ------------------------------------------------------------------ the forward pass
    def intro_inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The introspective token ids for every row, and the attention mask extended over them."""
        rows, k = batch.input_ids.shape[0], len(self.intro_ids)
        intro = torch.tensor([self.intro_ids] * rows, dtype=torch.long, device=self.device)
        ones = torch.ones((rows, k), dtype=torch.long, device=self.device)
        return intro, torch.cat([batch.attention_mask, ones], dim=1)

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Head logits from the mean final hidden state at the introspective positions, in fp32.

        In bf16 the hidden state has 8 significant bits; a bf16 dot product over thousands of
        dimensions would quantise the head logit by ~1e-2, enough to move a probability across a
        routing threshold, and under autocast a Linear would run in bf16 even with fp32 weights.
        One row per prompt costs nothing in fp32, so the head always computes there.
        """
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            return self.head(hidden.float().mean(dim=1))

    @contextmanager
    def final_hidden(self, last: int) -> Iterator[list[torch.Tensor]]:
        """Capture the decoder's final (normed) hidden states at the ``last`` positions.

        ``output_hidden_states=True`` would keep every layer's states for every position alive
        until the forward ends, which costs ~7% of a long prefill; only these few rows are needed.
        """
        captured: list[torch.Tensor] = []

        def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            captured.append(output[0][:, -last:])

        handle = self.peft_model.get_base_model().get_decoder().register_forward_hook(hook)
        try:
            yield captured
        finally:
            handle.remove()

    def uses_fast_path(self) -> bool:
        """Inference calls take the fast path; training and ``disable_adapter()`` take PEFT's."""
        return (
            self._view is not None
            and not self.training
            and not torch.is_grad_enabled()
            and self._view.usable()
        )

    def forward_batch(
        self, batch: Batch, logits_to_keep: int | None = None, use_cache: bool = False
    ) -> IntroOutput:
        """One adapter-active forward over prompt + introspective tokens.

        Activated LoRA changes only the introspective positions, so every prompt position (its
        logits and its KV cache) is computed exactly as by the base model. ``logits_to_keep``:
        LM logits of that many last positions (0: all; None: none, as scoring needs none); the
        cache is cropped back to the prompt.
        """
        k = len(self.intro_ids)
        intro, mask = self.intro_inputs(batch)
        ids = torch.cat([batch.input_ids, intro], dim=1)
        positions = self._positions(mask)
        # DynamicCache() without the model config keeps every position in every layer, also in
        # sliding-window layers (Mistral, Gemma 3): a windowed layer keeps only its last window,
        # so cropping [INTRO] off it would leave fewer positions than the next token attends to.
        cache = DynamicCache() if use_cache else None
        logits = None
        if self.uses_fast_path():
            assert self._view is not None
            states = self._view(ids, mask, positions, cache)
            hidden = states[:, -(k + 1) :]
            if logits_to_keep is not None:
                kept = states if logits_to_keep == 0 else states[:, -logits_to_keep:]
                logits = self._lm_logits(kept)
        else:
            with self.final_hidden(k + 1) as captured:
                out = self.peft_model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    cache=cache,
                    use_cache=use_cache,
                    logits_to_keep=1 if logits_to_keep is None else logits_to_keep,
                )
            hidden = captured[0]
            cache = out.cache if use_cache else None
            logits = None if logits_to_keep is None else out.logits
        if cache is not None:
            cache.crop(-k)  # keep the prompt positions only: exactly the base model's cache
        return IntroOutput(logits, self.head_logits(hidden[:, -k:]), cache, hidden)

    def next_token_logits(self, output: IntroOutput) -> torch.Tensor:
        """LM logits ``[B, V]`` at the last prompt position, for generation.

        Taken from the final hidden states rather than via ``logits_to_keep=k+1``: a 3-D slice of
        two positions sends the LM head down a batched-matmul path that copies the whole
        vocabulary matrix (~25 ms on SmolLM2), more than the rest of the scoring overhead.
        """
        return self._lm_logits(output.hidden[:, -len(self.intro_ids) - 1, :])

    def _lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head over final hidden states, with Gemma's final logit soft-capping applied as
        its ``forward`` applies it (other logit rescalings are refused at load by
        ``check_architecture``)."""
        logits = self.plain.get_output_embeddings()(hidden)
        cap = getattr(self.plain.config.get_text_config(), "final_logit_softcapping", None)
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

    # ------------------------------------------------------------------ moved to training
    def prompt_cache(self, batch: Batch) -> DynamicCache:
        """Deprecated: :func:`introroute.training.forward.prompt_cache`."""
        return _moved_to_training("prompt_cache")(self, batch)

    def intro_forward(self, batch: Batch, cache: DynamicCache) -> torch.Tensor:
        """Deprecated: :func:`introroute.training.forward.intro_forward`."""
        return _moved_to_training("intro_forward")(self, batch, cache)


def _new_head(
    config: IntroConfig, plain: PreTrainedModel, tokenizer: Any, hidden_size: int
) -> torch.nn.Module:
    """The head ``config.head`` names (:mod:`introroute.gatekeeper.heads`), freshly initialised."""
    if config.head == VERBALISED:
        try:
            ids = verbalised_token_ids(tokenizer, config.verbalised_tokens)
        except ValueError as exc:
            raise GatekeeperError(str(exc)) from None
        cap = getattr(plain.config.get_text_config(), "final_logit_softcapping", None)
        return VerbalisedHead(plain.get_output_embeddings(), ids, cap)
    head = torch.nn.Linear(hidden_size, len(config.targets))  # fp32 whatever the base's dtype
    torch.nn.init.normal_(head.weight, std=0.02)
    torch.nn.init.zeros_(head.bias)
    return head


def _merge_in_place(layer: TrainableTokensLayer, adapter: str = "default") -> None:
    """PEFT's ``merge`` writing the [INTRO] rows into the existing weight instead of a copy.

    PEFT's own merge builds a new matrix (``index_copy``), so the plain view would keep the old
    one alive: a second embedding matrix (1.2 GB for an 8B model in bf16) and a plain model whose
    [INTRO] row differs from the adapter's. In place, both share one matrix with the trained row;
    PEFT's ``unmerge`` already restores the original rows in place.
    """
    weight = layer.base_layer.weight
    index = torch.tensor(layer.token_indices[adapter], device=weight.device)
    with torch.no_grad():
        weight.index_copy_(0, index, layer.trainable_tokens_delta[adapter].to(weight))
    layer.merged_adapters.append(adapter)


def _plain_view(model: PreTrainedModel) -> PreTrainedModel:
    """A second module tree over the same weight tensors, untouched by PEFT's layer injection.

    Decoding one token at a time is dominated by per-layer Python overhead on a small model; the
    adapter wrappers (inactive after [INTRO] anyway) would add ~50% per token.
    """
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(model.config, dtype=model.dtype)
    plain.load_state_dict(model.state_dict(), assign=True, strict=True)
    buffers = dict(model.named_buffers())  # non-persistent ones (rotary tables) are not in the state dict
    for name, _ in list(plain.named_buffers()):
        owner, _, attr = name.rpartition(".")
        plain.get_submodule(owner).register_buffer(attr, buffers[name], persistent=False)
    plain.tie_weights()
    plain.generation_config = model.generation_config
    return plain.eval()


def _moved_to_training(name: str) -> Callable[..., Any]:
    """The function of :mod:`introroute.training.forward` that ``IntroLM.<name>`` became.

    The gatekeeper's one import of the offline side, and only from a deprecated method: a
    routed request never calls one (``tests/test_layout.py`` names this exception).
    """
    warnings.warn(
        f"IntroLM.{name} is deprecated; use introroute.training.forward.{name}(gatekeeper, ...)",
        DeprecationWarning,
        stacklevel=3,
    )
    import introroute.training.forward as forward

    return getattr(forward, name)
