"""Request admission and forwarding: method and body checks, then the upstream target.

The upstream is always the route's service: nothing a client sends (Host, absolute URL,
X-Forwarded-*) can choose where a governed request goes."""

from __future__ import annotations

from mitmproxy import http

from . import headers, request_stream
from .headers import has_header, header
from .context import FlowContext
from .responses import json_response


def check_method(ctx: FlowContext, flow: http.HTTPFlow) -> http.Response | None:
    methods = ctx.match.route.route.methods if ctx.match else None
    if methods and flow.request.method not in methods and flow.request.method != "OPTIONS":
        return json_response(405, {"message": f"Method {flow.request.method} is not allowed on this route"},
                             {"Allow": ", ".join(methods)})
    return None


def refuse_upgrades(ctx: FlowContext, flow: http.HTTPFlow) -> http.Response | None:
    """MCP runs over plain HTTP requests. An upgraded connection (WebSocket, h2c) would carry
    traffic no phase of the gateway ever sees, so governed routes do not upgrade."""
    if has_header(flow.request.headers, "upgrade"):
        return json_response(400, {"message": "protocol upgrades are not accepted on MCP routes"})
    return None


def check_body(ctx: FlowContext, flow: http.HTTPFlow) -> http.Response | None:
    """A governed request is inspected whole before anything is forwarded."""
    limit = body_limit(ctx)
    if flow.request.stream:
        # Something enabled request streaming: the body would bypass inspection.
        return json_response(500, {"message": "request streaming is not allowed on governed routes"})
    content = flow.request.raw_content
    if content is None:
        return json_response(400, {"message": "request body could not be read"})
    if len(content) > limit:  # (the transport refuses it first; see check_declared_size)
        return _too_large(limit)
    return None


def body_limit(ctx: FlowContext) -> int:
    """The largest request body this flow may have: the gateway's, or the route's smaller one."""
    limit = ctx.snapshot.policy.gateway.max_body_size
    acl = ctx.match.route.route.acl if ctx.match is not None else None
    route_limit = acl.max_request_body_size if acl is not None else None
    return min(limit, route_limit) if route_limit else limit


def _too_large(limit: int) -> http.Response:
    return json_response(413, {"message": f"Request body is larger than {limit} bytes"})


def check_declared_size(ctx: FlowContext, flow: http.HTTPFlow) -> http.Response | None:
    """At request headers: refuse a declared oversized body before reading it, and have the
    transport refuse, while it arrives, a body that grows past the limit (chunked, or any other
    way), so that no more than the limit is ever held."""
    limit = body_limit(ctx)
    declared = header(flow.request.headers, "content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return _too_large(limit)

    def refuse() -> http.Response:
        ctx.answered_by = "forwarding.check_body"  # for audit: what refused it, as if it had been read whole
        return _too_large(limit)

    request_stream.limit(flow, limit, refuse)
    return None


def forward(ctx: FlowContext, flow: http.HTTPFlow) -> None:
    """Point the request at the route's upstream (gateway mode; intercept mode already goes there)."""
    if ctx.mode != "gateway" or ctx.match is None:
        return None
    svc = ctx.match.route.service
    req = flow.request
    req.path = ctx.snapshot.routes.upstream_path(ctx.match, req.path)
    req.scheme = svc.scheme
    req.data.host, req.data.port = svc.host, svc.port  # the fields; Host is set once, below
    if req.is_http2 or req.is_http3:
        req.authority = svc.authority  # :authority is HTTP/2's Host; a Host header is only kept in step
        if has_header(req.headers, "Host"):
            headers.put(req.headers, "Host", svc.authority)
    else:
        req.data.authority = b""  # origin-form upstream, even if the client sent an absolute-form target
        headers.put(req.headers, "Host", svc.authority)
    ctx.upstream_set = True
    return None


def not_routed(ctx: FlowContext, flow: http.HTTPFlow) -> http.Response | None:
    """Gateway mode: the last word. Nothing goes to the listener's nominal reverse target."""
    if ctx.mode == "gateway" and not ctx.upstream_set:
        return json_response(404, {"message": "no route matched with those values"})
    return None
