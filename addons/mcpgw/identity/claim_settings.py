"""Settings of claim headers (Kong's ai-mcp-oauth2 `claim_to_header` and `upstream_headers`, same
names); the phase is claim_headers.py."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from ..canonical import canonical_header_name, is_gateway_header
from ..policy.base import StrictModel

_TOKEN_CHARS = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field-name
# Headers whose meaning belongs to HTTP or to the gateway: a claim never sets them.
_RESERVED = frozenset({"authorization", "proxy-authorization", "host", "content-length", "content-type",
                       "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade", "cookie",
                       "mcp-session-id", "mcp-protocol-version", "forwarded", "x-forwarded-for",
                       "x-forwarded-host", "x-forwarded-proto"})


def _check_header(name: str) -> str:
    if not _TOKEN_CHARS.fullmatch(name):
        raise ValueError(f"{name!r} is not a header name")
    if canonical_header_name(name) in _RESERVED or is_gateway_header(name.encode("latin-1")):
        raise ValueError(f"{name} is set by HTTP or by the gateway itself; a claim cannot set it")
    return name


class ClaimToHeader(StrictModel):
    claim: str = Field(min_length=1, description="A top-level claim of the validated token")
    header: str = Field(description="The header it is sent upstream in")

    @field_validator("header")
    @classmethod
    def _check_name(cls, v: str) -> str:
        return _check_header(v)


class UpstreamHeader(StrictModel):
    header: str = Field(description="The header the value is sent upstream in")
    path: list[str] = Field(min_length=1, description="Claim path, e.g. [realm_access, roles]")

    @field_validator("header")
    @classmethod
    def _check_name(cls, v: str) -> str:
        return _check_header(v)

    @field_validator("path")
    @classmethod
    def _check_path(cls, v: list[str]) -> list[str]:
        if not all(v):
            raise ValueError("a claim path is a list of non-empty claim names")
        return v


def check_settings(claim_to_header: list[ClaimToHeader], upstream_headers: list[UpstreamHeader]) -> None:
    """OAuthConfig's validator calls this: Kong makes the two options mutually exclusive."""
    if claim_to_header and upstream_headers:
        raise ValueError("claim_to_header and upstream_headers are mutually exclusive (as in Kong): "
                         "use upstream_headers for nested claims, claim_to_header for top-level ones")
    names = [canonical_header_name(h.header) for h in [*claim_to_header, *upstream_headers]]
    if len(names) != len(set(names)):
        raise ValueError("each header is set from one claim only")
