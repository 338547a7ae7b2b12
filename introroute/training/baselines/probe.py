"""Last-hidden-state probe: the frozen gatekeeper backbone, no LoRA, no ``[INTRO]``.

The feature is SmolLM2's final hidden state at the last prompt token (the generation prompt's
last token), the prompt chat-templated, spoof-proofed and left-truncated exactly as the
gatekeeper does (:meth:`IntroLM.encode`). It isolates what IntroLM adds over a linear read-out
of the same model: a learned query token and the adapter that processes it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from introroute.gatekeeper import DEFAULT_BASE, IntroConfig, IntroLM, load_base
from introroute.scoring import Messages
from introroute.training.baselines.base import length_batches
from introroute.training.baselines.logistic import FrozenFeatureBaseline
from introroute.training.forward import prefix_first_where_exact, shared_prefix_forward


class HiddenStateProbe(FrozenFeatureBaseline):
    """Per-target logistic regression on the frozen base model's last prompt-token state."""

    kind = "probe"

    def __init__(
        self, targets: list[str], base: str = DEFAULT_BASE, max_context: int = 1024, batch_size: int = 8
    ) -> None:
        super().__init__(targets)
        self.base, self.max_context, self.batch_size = base, max_context, batch_size
        self._gatekeeper: IntroLM | None = None

    @property
    def gatekeeper(self) -> IntroLM:
        """An (untrained) gatekeeper on ``base``: only its encoding and its plain view are used."""
        if self._gatekeeper is None:
            config = IntroConfig(targets=self.targets, max_context=self.max_context)
            self._gatekeeper = IntroLM.build(load_base(self.base), config)
        return self._gatekeeper

    def params(self) -> dict[str, Any]:
        return {"base": self.base, "max_context": self.max_context, "batch_size": self.batch_size}

    def extractor_id(self) -> str:
        return f"probe-{self.gatekeeper.base_fingerprint}-ctx{self.max_context}"

    def extract(self, conversations: list[Messages]) -> np.ndarray:
        gk = self.gatekeeper
        prompts = [gk.encode(c) for c in conversations]
        out = np.zeros((len(prompts), gk.plain.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for rows in tqdm(
                length_batches([len(p.ids) for p in prompts], self.batch_size), desc="probe features"
            ):
                # the batch's shared template head is prefilled once (see training.prefix_first)
                batch = prefix_first_where_exact(gk, gk.collate([prompts[i] for i in rows]))
                hidden = shared_prefix_forward(gk, batch, output_hidden_states=True)[1].hidden_states[-1]
                out[rows] = hidden[:, -1].numpy()  # the last position is every row's last token
        return out
