"""Keep secrets out of everything the router emits.

Why a redactor and not just ``SecretStr``: ``api_key``, ``extra_headers`` values and ``api_base``
are secret types in the config (their reprs and dumps are masked), but any config value may come
from ``${ENV_VAR}``, and provider error messages and LiteLLM's own debug logs echo what they were
sent. The config therefore lists every secret value it holds; decisions, routing-log records, the
router's error messages and the log records of introroute, LiteLLM and the HTTP clients pass
through :meth:`Redactor.redact` before they leave. A few credential shapes (``Bearer <token>``,
``?key=...`` in a URL, ``user:password@`` in a URL) are masked even when the value is unknown.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable
from typing import Any

from pydantic import SecretStr

MASK = "***"
# Shorter values ("1", "us") are too common to mask without mangling unrelated text.
MIN_SECRET_LEN = 4

# Query parameters that carry credentials in signed or key-in-URL endpoints.
_SECRET_QUERY_KEYS = (
    r"api[-_]?key|key|token|access[-_]?token|auth|authorization|sig|signature|secret|password|"
    r"x-amz-signature|x-amz-credential|x-amz-security-token"
)
_PATTERNS = (
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{4,}"), rf"\1\2{MASK}"),
    (re.compile(rf"(?i)([?&](?:{_SECRET_QUERY_KEYS})=)[^&#\s'\"]+"), rf"\1{MASK}"),
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@"), rf"\1{MASK}@"),  # user may be empty
)


class Redactor:
    """Replaces known secret strings, and credential-shaped text, with ``***`` in nested values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_LEN}, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def redact_text(self, value: str) -> str:
        """``value`` with every known secret and credential-shaped substring masked."""
        for secret in self._secrets:
            value = value.replace(secret, MASK)
        for pattern, replacement in _PATTERNS:
            value = pattern.sub(replacement, value)
        return value

    def redact(self, value: Any) -> Any:
        """Return ``value`` with every secret masked; non-string leaves are returned unchanged."""
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {self.redact(k): self.redact(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact(v) for v in value]
        return value


class SecretUrl(SecretStr):
    """An endpoint URL whose repr shows scheme, host and path but never a query or a password.

    Why not a plain ``SecretStr``: ``api_base`` is what one checks first when a tier misbehaves,
    but a signed URL (``?sig=...``, ``?key=...``) or ``user:password@host`` carries a credential.
    """

    def _display(self) -> str:
        try:
            parts = urllib.parse.urlsplit(self.get_secret_value())
            host = parts.hostname or ""
            if parts.port is not None:
                host = f"{host}:{parts.port}"
        except ValueError:
            return "**********"
        query = f"?{MASK}" if parts.query else ""
        user = f"{MASK}@" if parts.username or parts.password else ""
        return f"{parts.scheme}://{user}{host}{parts.path}{query}"


def url_secrets(url: str) -> list[str]:
    """The credential parts of a URL: query values and the userinfo password (for the redactor)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return [url]
    values = [v for _, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=False)]
    raw = [p.split("=", 1)[1] for p in parts.query.split("&") if "=" in p]  # as sent, un-decoded
    if parts.password:
        values.append(parts.password)
    return [v for v in {*values, *raw} if len(v) >= MIN_SECRET_LEN]


# -- log records ------------------------------------------------------------------------------

# Loggers whose records can carry request arguments, headers or URLs. A filter on a logger sees
# only records created on that very logger (not its children's), so every emitter is named, and
# existing children under these prefixes are found when a router is built.
LOG_PREFIXES = ("introroute", "LiteLLM", "litellm", "openai", "httpx", "httpcore")


class _Registry:
    """Every secret of every router built in this process, for the log filter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self.redactor = Redactor()

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            new = {s for s in secrets if len(s) >= MIN_SECRET_LEN} - self._secrets
            if new:
                self._secrets |= new
                self.redactor = Redactor(self._secrets)


_registry = _Registry()


class RedactingFilter(logging.Filter):
    """Masks known secrets in a log record's message and exception text before any handler runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        redactor = _registry.redactor
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return True
        clean = redactor.redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[0] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if redactor.redact_text(text) != text:  # handlers would format the raw exception again
                record.exc_text, record.exc_info = redactor.redact_text(text), None
        elif record.exc_text:
            record.exc_text = redactor.redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redactor.redact_text(record.stack_info)
        return True


_filter = RedactingFilter()
_installed: set[str] = set()
_install_lock = threading.Lock()


def protect_logs(secrets: Iterable[str]) -> None:
    """Register ``secrets`` and make sure every emitting logger of interest masks them.

    Called when a router is built: loggers created since the last call are covered too.
    """
    _registry.add(secrets)
    names = [
        name
        for name in [*LOG_PREFIXES, *logging.root.manager.loggerDict]
        if isinstance(name, str) and name.split(".", 1)[0].split(" ", 1)[0] in LOG_PREFIXES
    ]
    with _install_lock:
        for name in names:
            if name not in _installed:
                logging.getLogger(name).addFilter(_filter)
                _installed.add(name)


def divert_verbose_prints() -> None:
    """Turn LiteLLM's ``set_verbose = True`` into its ``LiteLLM`` logger at DEBUG, before a call.

    Why: ``litellm.set_verbose`` (deprecated by LiteLLM in favour of ``LITELLM_LOG=DEBUG``)
    ``print()``s request details and upstream error bodies to stdout, where no log filter can
    mask a key a provider echoes back. The same text goes to the ``LiteLLM`` logger, which
    :func:`protect_logs` filters; so the debug output stays, masked. Checked before every call
    introroute makes, since a caller may set the flag after building the router.
    """
    import litellm

    if litellm.set_verbose is not True:
        return
    litellm.set_verbose = False
    logging.getLogger("LiteLLM").setLevel(logging.DEBUG)
    logging.getLogger(__name__).warning(
        "litellm.set_verbose=True prints secrets unmasked to stdout; introroute turned it into the "
        "'LiteLLM' logger at DEBUG (masked). Use LITELLM_LOG=DEBUG instead"
    )
