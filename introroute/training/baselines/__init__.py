"""Baselines for the gatekeeper, behind one scikit-learn-like interface (:class:`Baseline`).

``minilm_ft`` and ``minilm_lr`` (external encoder), ``probe`` (the frozen backbone's last prompt
token), ``prior`` (task base rate) and ``random``. The fourth baseline of the comparison, the
"[INTRO] embedding + head only" ablation, is IntroLM itself trained with ``lora_r=0``.
"""

from __future__ import annotations

from pathlib import Path

from introroute.errors import AdapterError
from introroute.training.baselines.base import Baseline, GroupPath, read_meta
from introroute.training.baselines.encoder import MiniLMFineTuned, MiniLMLogistic
from introroute.training.baselines.prior import GroupPrior, RandomScores
from introroute.training.baselines.probe import HiddenStateProbe

KINDS: dict[str, type[Baseline]] = {
    cls.kind: cls for cls in (MiniLMFineTuned, MiniLMLogistic, HiddenStateProbe, GroupPrior, RandomScores)
}


def load_baseline(directory: str | Path) -> Baseline:
    """Load a saved baseline of any kind (its ``baseline.json`` names the kind)."""
    kind = read_meta(Path(directory))["kind"]
    if kind not in KINDS:
        raise AdapterError(f"{directory}: unknown baseline kind {kind!r}; known: {sorted(KINDS)}")
    return KINDS[kind].load(directory)


__all__ = ["KINDS", "Baseline", "GroupPath", "load_baseline"]
