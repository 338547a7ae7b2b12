"""Which targets a router's gatekeeper can score, known before any model is loaded.

Why at load time: a tier whose ``target`` the gatekeeper has no head for (``target: slef``, a
model the adapter was never trained on) used to load fine and then route every request one way
(``cost_aware`` gave the missing head ``unscored_p`` = 1.0, so that tier always won). The heads of
a saved adapter are listed in its ``introroute.json``, so a config is checked against them by
reading one small JSON file, without torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

from introroute.errors import ConfigError

META_FILE = "introroute.json"  # as written by introroute.gatekeeper.persistence
UNTRAINED_TARGETS = ["self"]  # what IntroLM.from_pretrained builds without an adapter


class GatekeeperConfig(Protocol):
    """What is read here of a router's ``gatekeeper:`` section: the adapter and its base.

    Structural, so this module need not import :mod:`introroute.router.config`, which imports it.
    """

    @property
    def adapter(self) -> str | None: ...

    @property
    def base(self) -> str: ...


class _Tier(Protocol):
    @property
    def target(self) -> str: ...


class RouterConfig(Protocol):
    """What :func:`check_targets` reads of a router config: each tier's target."""

    @property
    def tiers(self) -> Sequence[_Tier]: ...


@dataclass(frozen=True)
class Heads:
    """The targets a gatekeeper scores, and where that list came from (for error messages)."""

    targets: list[str]
    source: str


def adapter_directory(spec: GatekeeperConfig) -> Path | None:
    """The adapter directory ``spec`` loads: its ``adapter``, or the one packaged for its base."""
    if spec.adapter is not None:
        return Path(spec.adapter)
    packaged = Path(str(resources.files("introroute") / "adapters" / spec.base))
    return packaged if (packaged / META_FILE).is_file() else None


def configured_heads(spec: GatekeeperConfig) -> Heads | None:
    """The heads of the adapter ``spec`` names; ``None`` when that directory does not exist (yet).

    A missing directory is not an error here: a config may name an adapter still to be trained and
    be used offline (replay with saved predictions); :class:`Router` insists on it at build time.
    """
    directory = adapter_directory(spec)
    if directory is None:  # no packaged adapter for this base: an untrained gatekeeper
        return Heads(list(UNTRAINED_TARGETS), f"the untrained gatekeeper of base {spec.base!r}")
    meta_path = directory / META_FILE
    if not directory.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        targets = meta["config"]["targets"]
    except FileNotFoundError:
        raise ConfigError(
            f"gatekeeper.adapter: {directory} is not an introroute adapter ({META_FILE} is missing)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"gatekeeper.adapter: cannot read the heads from {meta_path}: {exc}") from None
    if not (isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)):
        raise ConfigError(f"gatekeeper.adapter: {meta_path} lists no target heads")
    return Heads(targets, f"adapter {directory}")


def required_heads(spec: GatekeeperConfig) -> Heads:
    """Like :func:`configured_heads`, but a missing adapter directory is a :class:`ConfigError`."""
    heads = configured_heads(spec)
    if heads is None:
        raise ConfigError(
            f"gatekeeper.adapter: no adapter at {spec.adapter!r} (train one with `introroute train "
            "--out DIR` and name DIR here, or set adapter: null for the packaged one)"
        )
    return heads


def check_targets(config: RouterConfig, heads: Heads, origin: str) -> None:
    """Every tier target and calibrated target must be one of ``heads``; else :class:`ConfigError`."""
    problems = [
        f"{origin}: tiers[{i}].target: {tier.target!r} is not a head of {heads.source}; "
        f"expected one of {heads.targets}"
        for i, tier in enumerate(config.tiers)
        if tier.target not in heads.targets
    ]
    if problems:
        raise ConfigError("\n".join(problems))


def scorer_heads(targets: Sequence[str], description: str) -> Heads:
    """Heads of an already-built gatekeeper (``Scorer.targets``)."""
    return Heads([str(t) for t in targets], description)
