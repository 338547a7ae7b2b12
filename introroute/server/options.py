"""What one client may ask of ``introroute serve``: body size, messages, characters, time, and the key.

Its own module (pydantic only) so the CLI builds its flags from these fields without importing
FastAPI, and the docs generator reads the descriptions.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

#: The environment variable ``introroute serve --api-key`` defaults to.
API_KEY_ENV = "INTROROUTE_API_KEY"


class ServeOptions(BaseModel):
    """What one client may ask of the server: sizes, time, and the key (``introroute serve`` flags)."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(
        default=1 << 20,
        ge=1,
        description="largest request body in bytes; larger ones get a 413 before they are read in full",
    )
    max_messages: int = Field(
        default=1000, ge=1, description="most messages in one /score request; more is a 400"
    )
    max_chars: int = Field(
        default=100_000,
        ge=1,
        description="most characters of message text in one /score request (tokenised on the event "
        "loop, ~1 ms per 1,000 characters); more is a 400",
    )
    request_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="a connection must deliver a whole request (headers and body) within this many "
        "seconds of opening, or of its previous response, else it is closed",
    )
    keep_alive_s: int = Field(
        default=5, ge=1, description="an idle keep-alive connection is closed after this many seconds"
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="when set, /score and /metrics need 'Authorization: Bearer <api_key>' ; /health is open",
    )
