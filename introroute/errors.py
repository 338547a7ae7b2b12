"""Typed exceptions, httpx-style: one base class, one subclass per kind of failure.

Callers catch :class:`IntrorouteError` to handle everything the library raises on purpose, or a
subclass to handle one kind. Every message names the offending input (file, key path, message
index) so a user can fix it without reading a traceback. Messages never contain secrets.
"""

from __future__ import annotations


class IntrorouteError(Exception):
    """Base class of every error introroute raises on purpose."""


class MessagesError(IntrorouteError, ValueError):
    """The chat messages cannot be scored: empty, no user content, malformed roles or parts."""


class ConfigError(IntrorouteError, ValueError):
    """A router/policy configuration is invalid. The message names the file and the key path."""


class AdapterError(IntrorouteError):
    """An adapter directory is missing, malformed, or was trained on a different base model."""


class BaseModelMismatchError(AdapterError):
    """The adapter was trained on another base model than the one it is being loaded onto."""


class ModelLoadError(IntrorouteError):
    """A base model (HF directory, GGUF file, packaged default) could not be found or loaded."""


class GatekeeperError(IntrorouteError):
    """The gatekeeper failed while scoring (the router falls back to its fail-safe tier)."""


class GatekeeperTimeoutError(GatekeeperError):
    """The gatekeeper exceeded its time budget."""


class PolicyError(IntrorouteError):
    """A policy is unknown, cannot be imported, or got scores it cannot use."""


class RoutingError(IntrorouteError):
    """Every tier (after retries and fallbacks) failed; the last provider error is chained."""


class DataError(IntrorouteError, ValueError):
    """A data file (routing log, benchmark file, label file) is malformed; the message names file and line."""


class UnknownTargetError(GatekeeperError, ValueError):
    """A score was asked for a target the gatekeeper has no head output for."""


class ProviderError(IntrorouteError):
    """A provider's error as introroute passes it on: its type, status and message, secrets masked.

    Why a copy and not the original: a provider error and its own chain (the SDK's error, the
    HTTP response) can echo credentials ("Incorrect API key provided: Bearer sk-..."), and
    ``traceback.format_exception`` prints every link. :class:`RoutingError` therefore chains this
    redacted copy, which has no traceback (no frame locals) and no chain of its own.
    """

    def __init__(self, message: str, *, tier: str, error_type: str, status_code: int | None) -> None:
        super().__init__(message)
        self.tier = tier
        self.error_type = error_type
        self.status_code = status_code


class OutputError(IntrorouteError):
    """An offline command's output path exists (without ``--overwrite``) or cannot be written."""
