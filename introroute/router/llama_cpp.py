"""The ``llama_cpp`` gatekeeper engine: score and answer through llama.cpp's ``llama-server``.

The server runs the export of ``introroute export --format gguf-alora``::

    llama-server -m base.gguf --lora alora.gguf --lora-init-without-apply --host 127.0.0.1 --port 8080

**Score**: one ``/completion`` request with the prompt's token ids + ``[INTRO]``, the adapter on,
one token. llama.cpp applies the activated LoRA from ``[INTRO]`` on only. Each target's score is a
ratio of two tokens' probabilities at ``[INTRO]`` (:mod:`introroute.gatekeeper.gguf_alora`): the
request biases every score token by ``+BIAS_FLOOR`` (the positive ones also by their head bias),
keeps the top ``targets + 1`` tokens and asks for the post-sampling probabilities, which are the
softmax over exactly those tokens, so P(target) = p(positive) / (p(positive) + p(negative)).

**Answer**: a second request with the prompt alone and the *same* adapter list: llama-server
keeps a slot's KV cache when its adapter set is unchanged, finds no invocation token in this
prompt and runs it without the adapter, so only the last prompt token is evaluated again (the
response's ``timings.cache_n`` says how many were reused). Switching the adapter *off* instead
would make the server drop the cache (``lora_should_clear_cache``). The score and the answer go
to the same slot (``id_slot``). The score tokens and ``[INTRO]`` are banned from the answer.

Prompts are token ids, encoded here by the gatekeeper's own spoof-proof encoder: llama-server's
tokeniser would turn a user's literal ``[INTRO]`` into the special token.

Failures and timeouts behave as with ``introroute serve`` (this scorer is a
:class:`~introroute.router.remote.RemoteScorer`: same HTTP errors, same fail-safe routing).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from introroute.errors import GatekeeperError
from introroute.gatekeeper.prompting import PromptIds, encode_prompt
from introroute.router.remote import RemoteScorer
from introroute.scoring import Generation, GenerationStream, Messages

META_FILE = "introroute_gguf.json"  # as written by introroute.gatekeeper.gguf_alora
# Added to every score token's logit so that they are the top tokens: far above any LM logit,
# small enough that float32 keeps ~1e-5 of the difference that makes the score.
BIAS_FLOOR = 200.0
FINISH = {"eos": "stop", "word": "stop", "limit": "length"}
# The longest wait for the next bytes of an answer: the scoring budget bounds the score request
# only; an answer of hundreds of tokens legitimately takes longer than any scoring budget.
GENERATION_READ_TIMEOUT_S = 120.0


@dataclass
class LlamaCppPrefill:
    """What a score request leaves for the answer: the scores, the prompt, the server slot."""

    scores: dict[str, float]
    prompt: PromptIds
    slot: int
    timings: dict[str, Any] = field(default_factory=dict)
    consumed: bool = False

    @property
    def score(self) -> float:
        return next(iter(self.scores.values()))


class LlamaCppGatekeeper(RemoteScorer):
    """Scorer and local model over a llama-server that serves a ``gguf-alora`` export.

    ``export`` is the export directory (its ``introroute_gguf.json`` and tokenizer; the GGUF files
    are the server's), ``adapter_id`` the adapter's index in the server's ``--lora`` list,
    ``api_key`` llama-server's ``--api-key`` (sent as ``Authorization: Bearer`` on every request).
    Score requests go through :class:`RemoteScorer`'s calls (one overall deadline, ``timeout_s``);
    answers through a plain sync client whose reads wait up to ``GENERATION_READ_TIMEOUT_S``.
    ``transport`` (httpx's, sync and async, e.g. ``httpx.MockTransport``) serves both.
    """

    def __init__(
        self,
        url: str,
        export: str | Path,
        *,
        timeout_s: float | None = None,
        adapter_id: int = 0,
        max_context: int = 2048,
        api_key: str | SecretStr | None = None,
        transport: Any = None,
    ) -> None:
        super().__init__(url, timeout_s=timeout_s, api_key=api_key, transport=transport)
        self._client = httpx.Client(
            timeout=httpx.Timeout(GENERATION_READ_TIMEOUT_S, connect=self.timeout_s),
            headers=self._headers,
            transport=transport,
        )
        directory = Path(export)
        try:
            meta = json.loads((directory / META_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise GatekeeperError(f"{directory} is not a gguf-alora export: {exc}") from None
        from transformers import PreTrainedTokenizerFast

        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(str(directory))
        self.intro_ids: list[int] = list(meta["intro_token_ids"])
        self._heads: dict[str, dict[str, Any]] = dict(meta["targets"])
        self._targets = list(self._heads)
        self.max_prompt_tokens = max_context - len(self.intro_ids)
        self.lora = [{"id": adapter_id, "scale": 1.0}]
        score_ids = {h[k] for h in self._heads.values() for k in ("positive", "negative")}
        self._banned = [[i, False] for i in sorted(score_ids | set(self.intro_ids))]
        self._score_template = self._score_payload()

    @property
    def targets(self) -> list[str]:
        return list(self._targets)

    def encode(self, messages: Messages) -> PromptIds:
        return encode_prompt(self.tokenizer, messages, self.max_prompt_tokens)

    # ------------------------------------------------------------------ scoring
    def _score_payload(self) -> dict[str, Any]:
        bias: dict[int, float] = {}
        for head in self._heads.values():
            bias[head["positive"]] = BIAS_FLOOR + float(head["bias"])
            bias.setdefault(head["negative"], BIAS_FLOOR)
        return {
            "n_predict": 1,
            "n_probs": len(bias),
            "post_sampling_probs": True,
            "samplers": ["top_k"],
            "top_k": len(bias),
            "logit_bias": [[token, value] for token, value in bias.items()],
            "lora": self.lora,
            "cache_prompt": True,
        }

    def _score_request(self, prompt: PromptIds) -> dict[str, Any]:
        return self._score_template | {"prompt": prompt.ids + self.intro_ids}

    def _read_scores(self, body: dict[str, Any]) -> dict[str, float]:
        try:
            top = body["completion_probabilities"][0]["top_probs"]
            probs = {int(p["id"]): float(p["prob"]) for p in top}
        except (KeyError, IndexError, TypeError, ValueError):
            raise GatekeeperError(f"llama-server {self.url} returned no token probabilities") from None
        scores = {}
        for target, head in self._heads.items():
            positive, negative = probs.get(head["positive"], 0.0), probs.get(head["negative"], 0.0)
            total = positive + negative
            if not total > 0 or not math.isfinite(total):
                raise GatekeeperError(f"llama-server {self.url}: no probability for {target!r}'s tokens")
            scores[target] = positive / total
        return scores

    def prefill(self, messages: Messages) -> LlamaCppPrefill:
        """Score ``messages`` and remember the server slot whose KV cache now holds the prompt."""
        prompt = self.encode(messages)
        body = self._blocking(self._call("POST", "/completion", self._score_request(prompt)))
        slot = int(body.get("id_slot", -1))
        return LlamaCppPrefill(self._read_scores(body), prompt, slot, body.get("timings", {}))

    def scores(self, messages: Messages) -> dict[str, float]:
        return self.prefill(messages).scores

    async def ascores(self, messages: Messages) -> dict[str, float]:
        body = await self._call("POST", "/completion", self._score_request(self.encode(messages)))
        return self._read_scores(body)

    # ------------------------------------------------------------------ the local answer
    def generate_from(
        self,
        prefill: LlamaCppPrefill,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        stream: bool = False,
    ) -> Generation | GenerationStream:
        """Answer on the score request's slot, the adapter inactive, its prompt cache reused."""
        if prefill.consumed:
            raise GatekeeperError("this prefill was already used for a generation; prefill again")
        prefill.consumed = True
        payload: dict[str, Any] = {
            "prompt": prefill.prompt.ids,
            "id_slot": prefill.slot,
            "n_predict": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stop": list(stop or ()),
            "logit_bias": self._banned,
            "lora": self.lora,
            "cache_prompt": True,
            "return_tokens": True,
            "stream": stream,
        }
        if seed is not None:
            payload["seed"] = seed
        prompt_tokens = len(prefill.prompt.ids)
        if stream:
            return self._stream(payload, prompt_tokens)
        try:
            response = self._client.post(f"{self.url}/completion", json=payload)
        except httpx.HTTPError as exc:
            raise GatekeeperError(f"llama-server {self.url} failed to answer: {type(exc).__name__}") from None
        body = self._checked(response)
        prefill.timings = body.get("timings", {})
        tokens = [int(t) for t in body.get("tokens", [])]
        return Generation(
            text=str(body.get("content", "")),
            token_ids=tokens,
            finish_reason=FINISH.get(str(body.get("stop_type")), "stop"),
            prompt_tokens=prompt_tokens,
            completion_tokens=int(body.get("tokens_predicted", len(tokens))),
        )

    def _stream(self, payload: dict[str, Any], prompt_tokens: int) -> GenerationStream:
        """Server-sent events from ``/completion``: text pieces; totals set from the last event."""
        result = GenerationStream(pieces=iter(()), prompt_tokens=prompt_tokens)

        def pieces() -> Iterator[str]:
            with self._client.stream("POST", f"{self.url}/completion", json=payload) as response:
                if response.status_code != 200:
                    response.read()
                    self._checked(response)
                for line in response.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    event = json.loads(line[len("data: ") :])
                    result.token_ids.extend(int(t) for t in event.get("tokens", []))
                    if event.get("content"):
                        yield event["content"]
                    if event.get("stop"):
                        result.finish_reason = FINISH.get(str(event.get("stop_type")), "stop")
                        result.completion_tokens = int(event.get("tokens_predicted", len(result.token_ids)))

        result.pieces = pieces()
        return result

    def close(self) -> None:
        """Close the answers' connection pool too."""
        super().close()
        self._client.close()

    def __repr__(self) -> str:
        return f"LlamaCppGatekeeper({self.url!r}, timeout_s={self.timeout_s:g})"
