"""Keep secrets out of everything the router emits.

Why a redactor and not just ``SecretStr``: ``api_key`` is a ``SecretStr``, but any config value
may come from ``${ENV_VAR}`` (a bearer token inside ``extra_headers``, a signed ``api_base``), and
provider error messages may echo them. The config remembers every substituted value and every API
key; decisions, routing-log records and the router's own error messages pass through
:meth:`Redactor.redact` before they leave.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MASK = "***"
# Shorter values ("1", "us") are too common to mask without mangling unrelated text.
MIN_SECRET_LEN = 4


class Redactor:
    """Replaces known secret strings with ``***`` inside strings, dicts and lists."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_LEN}, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def redact(self, value: Any) -> Any:
        """Return ``value`` with every secret masked; non-string leaves are returned unchanged."""
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, MASK)
            return value
        if isinstance(value, dict):
            return {self.redact(k): self.redact(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact(v) for v in value]
        return value
