"""Scopes a route requires of the caller's token (openid-connect's `scopes_required` and
`scopes_claim`, same names and semantics): each entry is a space-separated set of scopes that
must all be granted, and any one entry suffices (["a b", "c"] is a AND b, or c). openid-connect's
`groups_required` / `groups_claim` and `roles_required` / `roles_claim` are the same check on
other claims, and use the same functions.

A valid token without the scopes is refused 403 with RFC 6750's `insufficient_scope` challenge
naming the first entry's scopes, which MCP clients read as a request to ask the user for more
scope; without the groups or roles, 403 `insufficient_scope` too, naming no scope (asking the user
for a scope cannot give a group)."""

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


def required_sets(entries: list[str]) -> tuple[frozenset[str], ...]:
    """A `*_required` setting compiled once per policy version: each entry's names, as a set."""
    return tuple(frozenset(entry.split()) for entry in entries)


def missing(claims: dict, required: tuple[frozenset[str], ...], path: tuple[str, ...]) -> bool:
    """True when no entry of `required` is wholly granted (nothing required: never missing)."""
    if not required:
        return False
    have = granted(claims, path)
    return not any(entry <= have for entry in required)


def insufficient(ctx: "FlowContext", first: str | None, what: str = "scopes") -> http.Response:
    """`first`: the first scopes_required entry, the scope the client is told to ask for (None for
    groups and roles); `what`: what the token lacks, as the description names it."""
    description = f"The access token lacks the {what} this route requires"
    challenge = bearer_challenge(resource_metadata=ctx.prm_url, error="insufficient_scope", description=description)
    if first is not None:
        challenge += f', scope="{" ".join(first.split())}"'
    return json_response(403, {"error": "insufficient_scope", "error_description": description},
                         {"WWW-Authenticate": challenge})
