"""Token claims forwarded upstream as headers (Kong's ai-mcp-oauth2 `claim_to_header` and
`upstream_headers`).

The upstream trusts these headers because only the gateway sets them: every client-sent header
whose name reads as one of them (compared as `canonical_header_name` gives, so `X_User_Id` is
`X-User-Id`) is removed on each request of the route, whether or not the token has the claim.
Values: a string as is, a number or boolean as JSON writes it, a list of those joined with ", "
(as Kong joins X-Consumer-Groups), anything else as compact JSON. A value that cannot be a header
(a control character, too long) refuses the request rather than being sent cut or altered."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mitmproxy import http

from ..policy.derived import PerPolicy
from ..responses import bearer_challenge, json_response
from .tokens import claim_at
from .upstream_headers import canonical_header_name

if TYPE_CHECKING:
    from ..context import FlowContext
    from ..policy.models import Policy

log = logging.getLogger("mcpgw.oauth")

_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
MAX_VALUE = 8192


def header_value(value: Any) -> str | None:
    """A claim as a header value; None when the token has no such claim."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    if isinstance(value, list) and all(isinstance(v, (str, bool, int, float)) for v in value):
        return ", ".join(v if isinstance(v, str) else json.dumps(v) for v in value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class RouteClaimHeaders:
    headers: tuple[tuple[str, tuple[str, ...]], ...]  # (header, claim path)
    canonical: frozenset[str]


def _compile(policy: "Policy") -> dict[str, RouteClaimHeaders]:
    out = {}
    for name, route in policy.routes.items():
        oauth = route.oauth
        if oauth is None or not (oauth.claim_to_header or oauth.upstream_headers):
            continue
        pairs = [(c.header, (c.claim,)) for c in oauth.claim_to_header]
        pairs += [(u.header, tuple(u.path)) for u in oauth.upstream_headers]
        out[name] = RouteClaimHeaders(tuple(pairs), frozenset(canonical_header_name(h) for h, _ in pairs))
    return out


_routes = PerPolicy(_compile)


def add_claim_headers(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """After the OAuth phases: the client's look-alikes out, the token's claims in."""
    if ctx.match is None or ctx.match.route.route.oauth is None:
        return None
    route = _routes(ctx.snapshot.policy).get(ctx.match.name)
    if route is None:
        return None
    request = flow.request
    fields = request.headers.fields
    kept = tuple(f for f in fields if canonical_header_name(f[0]) not in route.canonical)
    if len(kept) != len(fields):
        log.info("route %s: removed client-sent claim headers", ctx.route_name)
        request.headers.fields = kept
    claims = ctx.token_claims or {}
    for header, path in route.headers:
        value = header_value(claim_at(claims, path))
        if value is None:
            continue
        if _UNSAFE.search(value) or len(value) > MAX_VALUE:
            log.warning("route %s: claim %s cannot be sent as header %s; refusing", ctx.route_name, ".".join(path), header)
            description = f"The access token's {'.'.join(path)} claim cannot be forwarded"
            return json_response(401, {"error": "unauthorized", "error_description": description}, {
                "WWW-Authenticate": bearer_challenge(resource_metadata=ctx.prm_url, error="invalid_token",
                                                     description=description)})
        request.headers[header] = value
    return None
