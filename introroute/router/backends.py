"""Where a router's scores come from: the gatekeeper backends, chosen once by ``gatekeeper.backend``.

Why one registry: whether the gatekeeper is an in-process IntroLM, ``introroute serve`` over HTTP or
a llama-server decides which config fields mean something, whether requests go through the
micro-batcher (one model must not run twice at once) or straight to a service that batches itself,
whether the tier list may hold an in-process local tier, and whose heads the tier targets are
checked against. Each :class:`Backend` states those facts once; the config validation and the
router read them instead of asking ``url is None`` at every step.

``backend`` is one of :data:`BACKENDS` (``local``, ``http``, ``llama_cpp``) or ``module:factory``:
a callable returning any :class:`~introroute.scoring.Scorer`, called once when the router is
built, exactly like passing ``gatekeeper=factory()`` in code. Left out, it is ``http`` when
``url`` is set and ``local`` otherwise, as configs written before it meant.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from introroute.errors import ConfigError
from introroute.gatekeeper.spec import MODEL_FIELDS
from introroute.imports import import_path

if TYPE_CHECKING:
    from pydantic import SecretStr

    from introroute.scoring import Scorer

FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
"""``package.module:callable`` (``serve --scorer``'s spelling)."""


class BackendConfig(Protocol):
    """What a backend reads of the ``gatekeeper`` section (:class:`.config.GatekeeperConfig`)."""

    backend: str | None
    url: str | None
    export: str | None
    api_key: SecretStr | None

    @property
    def budget_s(self) -> float | None: ...

    def load_introlm(self) -> Scorer: ...


@dataclass(frozen=True)
class Backend:
    """One kind of gatekeeper and what the router does around it.

    Args:
        name: the ``backend:`` value.
        fields: the section's fields only this backend reads (a field of another backend is an error).
        required: fields it cannot work without.
        remote: a service that batches concurrent requests itself: the router awaits it per request
            instead of queueing for the micro-batcher's worker thread (and ``timeout_ms: auto``,
            which measures that worker, does not apply).
        generates: it can also answer the local tier from the scoring prefill (``None``: known once
            built, for a factory's scorer).
        owns_heads: its heads are known before it is built (the configured adapter's), so tier
            targets are checked when the config loads; otherwise when the router is built.
        build: makes the scorer from the section (lazily: a local model imports torch only here).
        eager: built once when the router is built, like a ``gatekeeper=`` argument, because what
            the scorer is (remote or not, generating or not) is known only then (``module:factory``).
    """

    name: str
    fields: frozenset[str]
    build: Callable[[BackendConfig], Scorer]
    required: frozenset[str] = frozenset()
    remote: bool = False
    generates: bool | None = False
    owns_heads: bool = False
    eager: bool = False


def _local(config: BackendConfig) -> Scorer:
    return config.load_introlm()


def _http(config: BackendConfig) -> Scorer:
    from introroute.router.remote import RemoteScorer  # httpx only: no torch

    assert config.url is not None
    return RemoteScorer(config.url, timeout_s=config.budget_s, api_key=config.api_key)


def _llama_cpp(config: BackendConfig) -> Scorer:
    from introroute.router.llama_cpp import LlamaCppGatekeeper

    assert config.url is not None and config.export is not None
    return LlamaCppGatekeeper(config.url, config.export, timeout_s=config.budget_s, api_key=config.api_key)


def _factory(config: BackendConfig) -> Scorer:
    assert config.backend is not None
    return scorer_from_factory(config.backend, "gatekeeper.backend")


def scorer_from_factory(path: str, where: str) -> Scorer:
    """What the callable ``path`` (``module:factory``) returns; :class:`ConfigError` naming ``where``
    (the YAML key or the flag) when it cannot be imported or called."""
    try:
        factory = import_path(path)
    except ImportError as exc:
        raise ConfigError(f"{where} {path!r}: cannot import: {exc}") from None
    if not callable(factory):
        raise ConfigError(f"{where} {path!r}: not a callable")
    try:
        return factory()
    except Exception as exc:  # the user's code: its failure is a config problem, named as such
        raise ConfigError(f"{where} {path!r}: the factory raised {type(exc).__name__}: {exc}") from exc


BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Make ``backend:`` accept ``backend.name`` (the built-ins below; an engine of your own)."""
    if FACTORY.match(backend.name):
        raise ValueError(f"backend name {backend.name!r} would read as module:factory")
    BACKENDS[backend.name] = backend
    return backend


register_backend(Backend("local", MODEL_FIELDS, _local, generates=True, owns_heads=True))
register_backend(Backend("http", frozenset({"url", "api_key"}), _http, frozenset({"url"}), remote=True))
register_backend(
    Backend(
        "llama_cpp",
        frozenset({"url", "export", "api_key"}),
        _llama_cpp,
        frozenset({"url", "export"}),
        remote=True,
        generates=True,
    )
)


def backend_named(name: str) -> Backend:
    """The registered backend ``name``, or the factory backend a ``module:factory`` names."""
    if name in BACKENDS:
        return BACKENDS[name]
    if FACTORY.match(name):
        return Backend(name, frozenset(), _factory, generates=None, eager=True)
    raise ConfigError(f"gatekeeper.backend {name!r}: expected one of {sorted(BACKENDS)} or 'module:factory'")


def section_fields() -> frozenset[str]:
    """Every field some backend owns: one set for the section's per-backend check."""
    return frozenset().union(*(backend.fields for backend in BACKENDS.values()))
