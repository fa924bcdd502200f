"""Settings of RFC 8693 token exchange on OAuth routes (Kong's ai-mcp-oauth2 `token_exchange`, same
names). Only the policy's base types here: the phase and its HTTP client are in exchange.py."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from ..policy.base import StrictModel, http_url
from ..policy.secrets import SecretValue

ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
ExchangeClientAuth = Literal["inherit", "client_secret_basic", "client_secret_post", "none"]


class TokenExchangeRequest(StrictModel):
    """What the gateway asks for (RFC 8693 section 2.1)."""

    subject_token_type: str = Field(ACCESS_TOKEN_TYPE, description="Type of the caller's token")
    requested_token_type: str = Field(ACCESS_TOKEN_TYPE, description="Type of token asked for")
    audience: list[str] = Field(default_factory=list, description="Logical names of the upstream (`audience`, repeated)")
    resource: str | None = Field(None, description="Absolute URI of the upstream (RFC 8707 `resource`)")
    scopes: list[str] = Field(default_factory=list, description="Scopes asked for (`scope`, space separated)")
    actor_token_source: Literal["none", "header", "config"] = Field("none", description="Where an actor token comes from")
    actor_token_header: str | None = Field(None, description="Request header carrying the actor token (source header)")
    actor_token: SecretValue | None = Field(None, description="A fixed actor token (source config; plain or a secret reference)")
    actor_token_type: str = Field(ACCESS_TOKEN_TYPE, description="Type of the actor token")

    @field_validator("resource")
    @classmethod
    def _check_resource(cls, v: str | None) -> str | None:
        parts = urlsplit(v) if v is not None else None
        if parts is not None and (not parts.scheme or parts.fragment):
            raise ValueError(f"resource must be an absolute URI without a fragment (RFC 8707), got {v!r}")
        return v

    @field_validator("actor_token_header")
    @classmethod
    def _check_header(cls, v: str | None) -> str | None:
        if v is not None and not _HEADER_NAME.fullmatch(v):
            raise ValueError(f"{v!r} is not a header name")
        return v

    @model_validator(mode="after")
    def _check_actor(self) -> "TokenExchangeRequest":
        if (self.actor_token_source == "header") != (self.actor_token_header is not None):
            raise ValueError("actor_token_source: header goes with actor_token_header (and only with it)")
        if (self.actor_token_source == "config") != (self.actor_token is not None):
            raise ValueError("actor_token_source: config goes with actor_token (and only with it)")
        return self


class TokenExchangeCacheConfig(StrictModel):
    enabled: bool = Field(True, description="Reuse an exchanged token for the same subject and request")
    ttl: float = Field(3600, gt=0, description="Seconds an exchanged token is reused when the answer has no expires_in")


class TokenExchangeConfig(StrictModel):
    """Kong's `token_exchange` (same names)."""

    enabled: bool = Field(True, description="Exchange the caller's token (false: the block is ignored; "
                                             "Kong's default is false, decK files name it)")
    token_endpoint: str = Field(description="The authorization server's token endpoint")
    client_auth: ExchangeClientAuth = Field(
        "client_secret_basic", description="client_secret_basic/_post, none, or inherit: the introspection client and method")
    client_id: str | None = Field(None, description="The gateway's client at the token endpoint")
    client_secret: SecretValue | None = Field(None, description="Its secret (plain or a secret reference)")
    request: TokenExchangeRequest = Field(default_factory=TokenExchangeRequest)
    cache: TokenExchangeCacheConfig = Field(default_factory=TokenExchangeCacheConfig)
    expiry_margin: float = Field(30, ge=0, le=600, description="Seconds before its expiry a cached token is no longer used")

    @field_validator("token_endpoint")
    @classmethod
    def _check_endpoint(cls, v: str) -> str:
        http_url(v, "token_endpoint")
        return v

    @model_validator(mode="after")
    def _check_client(self) -> "TokenExchangeConfig":
        if self.client_auth in ("client_secret_basic", "client_secret_post") and (
                not self.client_id or self.client_secret is None):
            raise ValueError(f"client_auth {self.client_auth} needs client_id and client_secret")
        if self.client_auth == "none" and not self.client_id:
            raise ValueError("client_auth none still names the gateway's client: set client_id")
        if self.client_auth in ("inherit", "none") and self.client_secret is not None:
            raise ValueError(f"client_secret is not used with client_auth {self.client_auth}")
        return self
