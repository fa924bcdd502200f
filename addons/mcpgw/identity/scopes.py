"""Scopes a route requires of the caller's token (openid-connect's `scopes_required` and
`scopes_claim`, same names and semantics): each entry is a space-separated set of scopes that
must all be granted, and any one entry suffices (["a b", "c"] is a AND b, or c).

A valid token without them is refused 403 with RFC 6750's `insufficient_scope` challenge naming
the first entry's scopes, which MCP clients read as a request to ask the user for more scope."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mitmproxy import http

from ..responses import bearer_challenge, json_response
from .tokens import claim_at

if TYPE_CHECKING:
    from ..context import FlowContext

def granted(claims: dict, path: list[str] | tuple[str, ...]) -> frozenset[str]:
    """The scopes a token grants: a space-separated string (RFC 8693/9068 `scope`) or a JSON list (`scp`)."""
    value: Any = claim_at(claims, path)
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


def missing(claims: dict, required: tuple[frozenset[str], ...], path: tuple[str, ...]) -> bool:
    """True when no entry of `required` is wholly granted (nothing required: never missing)."""
    if not required:
        return False
    have = granted(claims, path)
    return not any(entry <= have for entry in required)


def insufficient(ctx: "FlowContext", first: str) -> http.Response:
    """`first`: the first scopes_required entry, the scope the client is told to ask for."""
    description = "The access token lacks the scopes this route requires"
    challenge = bearer_challenge(resource_metadata=ctx.prm_url, error="insufficient_scope", description=description)
    challenge += f', scope="{" ".join(first.split())}"'
    return json_response(403, {"error": "insufficient_scope", "error_description": description},
                         {"WWW-Authenticate": challenge})
