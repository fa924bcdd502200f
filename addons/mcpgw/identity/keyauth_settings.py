"""Kong's key-auth settings of a route (applied in keyauth.py)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pydantic import Field, field_validator, model_validator

from ..policy.base import StrictModel

if TYPE_CHECKING:
    from .consumer_settings import Consumer


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # an HTTP token (RFC 9110)


class KeyAuthConfig(StrictModel):
    """Kong's key-auth settings."""

    key_names: list[str] = Field(default_factory=lambda: ["apikey"], min_length=1,
                                 description="Header or query parameter names that carry the key, tried in order")
    key_in_header: bool = Field(True, description="Look for the key in request headers")
    key_in_query: bool = Field(True, description="Look for the key in the query string")
    key_in_body: bool = Field(False, description="Not supported: MCP request bodies are JSON-RPC messages")
    hide_credentials: bool = Field(False, description="Remove the key from the request before it goes upstream")
    anonymous: str | None = Field(None, description="Consumer (username or id) to use when no valid key is given")
    realm: str | None = Field(None, description='Realm in the WWW-Authenticate: Key realm="..." challenge')
    run_on_preflight: bool = Field(True, description="Also require the key on CORS preflight (OPTIONS) requests")

    @field_validator("key_names")
    @classmethod
    def _check_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
        return v

    @field_validator("key_in_body")
    @classmethod
    def _no_body(cls, v: bool) -> bool:
        if v:
            raise ValueError("key_in_body is not supported: MCP request bodies are JSON-RPC messages; "
                             "send the key in a header")
        return v

    @field_validator("realm")
    @classmethod
    def _check_realm(cls, v: str | None) -> str | None:
        if v is not None and (not v or re.search(r'["\\\x00-\x1f\x7f]', v)):
            raise ValueError("realm must be non-empty and contain no quotes, backslashes or control characters")
        return v

    @model_validator(mode="after")
    def _somewhere_to_look(self) -> "KeyAuthConfig":
        if not (self.key_in_header or self.key_in_query):
            raise ValueError("key_in_header and key_in_query are both false: the key could never be found")
        return self


def check_anonymous(route_name: str, config: KeyAuthConfig | None, consumers: dict[str, Consumer]) -> None:
    """At policy load: an `anonymous` consumer must exist (Kong only finds out per request)."""
    if config is None or config.anonymous is None:
        return
    known = {name for name in consumers} | {c.id for c in consumers.values() if c.id}
    if config.anonymous not in known:
        raise ValueError(f"route {route_name!r}: key_auth.anonymous names consumer {config.anonymous!r}, "
                         "which is not defined under consumers")
