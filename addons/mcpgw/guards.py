"""DNS-rebinding protection (Host and Origin checks, which the MCP spec requires of servers) and
CORS, for gateway mode."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from mitmproxy import http

from . import canonical
from .canonical import host_of
from .cors_settings import CorsConfig
from .headers import has_header, header

if TYPE_CHECKING:
    from .context import FlowContext

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def public_hosts(gateway_urls: list[str], extra: list[str], option_hosts: list[str]) -> frozenset[str]:
    hosts = set(LOOPBACK_HOSTS)
    hosts.update((urlsplit(u).hostname or "").lower() for u in gateway_urls)
    hosts.update(h.lower().strip("[]") for h in [*extra, *option_hosts] if h)
    hosts.discard("")
    return frozenset(hosts)


def _origin_allowed(ctx: "FlowContext", origin: str) -> bool:
    gw = ctx.snapshot.policy.gateway
    if origin in gw.origins:
        return True
    cors = ctx.match.route.route.cors if ctx.match else None
    if cors and ("*" in cors.origins or origin in cors.origins):
        return True
    # Same-site requests from the gateway's own public hosts are fine.
    return (urlsplit(origin).hostname or "").lower() in ctx.public_hosts


def check_host(hosts: frozenset[str], authority: str | None) -> http.Response | None:
    """Gateway mode, before routing: only the gateway's own public names are served."""
    from .responses import json_response

    host = host_of(authority)
    if host in hosts:
        return None
    return json_response(403, {
        "error": "forbidden_host",
        "message": f"Host {host!r} is not a public host of this gateway. Add it to gateway.hosts in the "
                   "policy or start with --set mcp_public_hosts=HOST (DNS-rebinding protection).",
    })


def check_origin(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    from .responses import json_response

    if ctx.mode != "gateway":
        return None
    origin = header(flow.request.headers, "origin")
    if origin is not None and not _origin_allowed(ctx, origin):
        return json_response(403, {
            "error": "forbidden_origin",
            "message": f"Origin {origin!r} is not allowed. Add it to gateway.origins or the route's cors.origins "
                       "in the policy (DNS-rebinding protection).",
        })
    return None


def cors_preflight(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """Answer a CORS preflight for a route with cors configured (unless preflight_continue)."""
    req = flow.request
    cors = ctx.match.route.route.cors if ctx.match and ctx.mode == "gateway" else None
    if cors is None or req.method != "OPTIONS" or not has_header(req.headers, "access-control-request-method"):
        return None
    if cors.preflight_continue:
        return None
    resp = http.Response.make(204)
    _add_cors_headers(cors, req.headers.get("origin"), resp.headers)
    resp.headers["Access-Control-Allow-Methods"] = ",".join(cors.methods)
    asked = req.headers.get("access-control-request-headers")
    allowed = ",".join(cors.headers) if cors.headers is not None else asked
    if allowed:
        resp.headers["Access-Control-Allow-Headers"] = allowed
    if cors.max_age is not None:
        resp.headers["Access-Control-Max-Age"] = str(cors.max_age)
    return resp


def _add_cors_headers(cors: CorsConfig, origin: str | None, headers: http.Headers) -> None:
    if "*" in cors.origins and not cors.credentials:
        headers["Access-Control-Allow-Origin"] = "*"
    elif origin and ("*" in cors.origins or origin in cors.origins):
        headers["Access-Control-Allow-Origin"] = origin
        headers["Vary"] = "Origin"
    if cors.credentials:
        headers["Access-Control-Allow-Credentials"] = "true"
    if cors.exposed_headers:
        headers["Access-Control-Expose-Headers"] = ",".join(cors.exposed_headers)


def add_cors_to_response(ctx: "FlowContext", flow: http.HTTPFlow) -> None:
    cors = ctx.match.route.route.cors if ctx.match and ctx.mode == "gateway" else None
    origin = header(flow.request.headers, "origin") if cors is not None else None
    if origin and flow.response is not None:
        _add_cors_headers(cors, origin, flow.response.headers)


def canonicalize_request(request: http.Request) -> http.Response | None:
    """Replace the request target with its canonical form, or answer 400 when it has none."""
    from .responses import json_response

    try:
        target = canonical.canonical_target(request.path)
    except canonical.NotCanonical as e:
        return json_response(400, {"error": "bad_request_target", "message": f"The request target is refused: {e}"})
    if target != request.path:
        request.path = target
    return None
