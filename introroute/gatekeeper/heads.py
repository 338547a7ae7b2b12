"""The gatekeeper's heads: how P(success) is read from the final hidden state at ``[INTRO]``.

Two variants behind one interface (a module mapping the mean final hidden state ``[B, H]`` to
head logits ``[B, targets]``, whose sigmoid is P(success)), chosen by ``IntroConfig.head``:

- ``linear`` (the paper's): a trained ``Linear(H, targets)``, one output per target.
- ``verbalised``: the LM's own next-token distribution at ``[INTRO]``, restricted to two
  existing vocabulary tokens (``yes``/``no``): P(success) = P(yes) / (P(yes) + P(no)), i.e.
  ``sigmoid(logit_yes - logit_no)``. Nothing but the LoRA and the ``[INTRO]`` row learns; the
  two rows of the LM head stay the base model's. Why: any engine that serves a LoRA and returns
  token probabilities serves this score (llama.cpp's llama-server with an activated-LoRA GGUF;
  see :mod:`introroute.gatekeeper.engine`), where a linear head on hidden states needs an engine
  that returns hidden states *with* the adapter applied, which none does today.
"""

from __future__ import annotations

import torch

LINEAR = "linear"
VERBALISED = "verbalised"
HEADS = (LINEAR, VERBALISED)
DEFAULT_VERBALISED_TOKENS = ("yes", "no")


class VerbalisedHead(torch.nn.Module):
    """``logit_yes - logit_no`` of the LM head (soft-capped as the model caps its logits).

    Holds no parameters of its own: the LM head's module is referenced, not registered, so the
    head's ``state_dict`` stays empty (an adapter never carries the vocabulary matrix) and
    ``.to()`` moves the LM head once, with the model.
    """

    def __init__(self, lm_head: torch.nn.Module, token_ids: tuple[int, int], softcap: float | None) -> None:
        super().__init__()
        self.__dict__["_lm_head"] = lm_head  # not a submodule (see the class docstring)
        self.token_ids = token_ids
        self.softcap = softcap

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[B, 2]`` LM logits of the yes and no tokens, in fp32, as the LM head computes them."""
        lm_head: torch.nn.Module = self.__dict__["_lm_head"]
        rows = lm_head.weight[list(self.token_ids)].float()
        logits = hidden.float() @ rows.T
        bias = getattr(lm_head, "bias", None)
        if bias is not None:
            logits = logits + bias[list(self.token_ids)].float()
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.token_logits(hidden)
        return (logits[:, 0] - logits[:, 1]).unsqueeze(1)


def verbalised_token_ids(tokenizer: object, words: list[str]) -> tuple[int, int]:
    """The ids of the two verbalised tokens; each word must be one token of the base vocabulary."""
    ids = []
    for word in words:
        encoded = tokenizer.encode(word, add_special_tokens=False)  # type: ignore[attr-defined]
        if len(encoded) != 1:
            raise ValueError(f"verbalised token {word!r} is {len(encoded)} tokens here, not one")
        ids.append(int(encoded[0]))
    if ids[0] == ids[1]:
        raise ValueError(f"verbalised tokens {words!r} map to the same id {ids[0]}")
    return ids[0], ids[1]
