"""The rate-limit phases: `check_request_limits` (request headers, after identity: rules counting
HTTP requests, so that a refused request's body is never read), `check_limits` (request, after
governance decided each message: rules counting MCP methods or tools) and `add_headers`
(response headers: the windows' state on answers that passed).

Refusals answer as Kong's rate-limiting-advanced: the route's error_code (429) with
{"message": "API rate limit exceeded"}, Retry-After and the RateLimit-* / X-RateLimit-*-<window>
headers; a rule with `error: jsonrpc` answers each limited message with a JSON-RPC error
instead (HTTP 200, JSON or SSE as the client accepts), which MCP clients hand to the model
rather than treating as a transport failure."""

from __future__ import annotations

import hashlib
import logging

from mitmproxy import http

from ..context import FlowContext
from ..governance import access
from ..protocol.jsonrpc import INVALID_REQUEST
from ..responses import gateway_failure, json_response, jsonrpc_error, jsonrpc_errors_response
from . import backend
from .compiled import CompiledRule, route_limits
from .counters import Outcome
from .headers import client_headers

log = logging.getLogger("mcpgw.limits")

RATE_LIMITED = -32029  # JSON-RPC server error range: this gateway's code for a rate-limited message


def _identity_value(rule: CompiledRule, ctx: FlowContext, flow: http.HTTPFlow) -> str:
    """Whose counter: never something the client merely asserts, except the header identifier,
    which the policy chose knowingly. Consumer and credential fall back to the client IP for
    anonymous callers, as Kong's do."""
    kind = rule.rule.identifier
    identity = ctx.identity
    if kind == "consumer" and identity is not None:
        return "c:" + (identity.id or identity.username)
    if kind == "credential" and identity is not None and identity.credential:
        return "k:" + identity.credential
    if kind == "header":
        value = flow.request.headers.get(rule.rule.header_name or "")
        if value is not None:
            return "h:" + value
    if kind == "path":
        return "p:" + flow.request.path.split("?", 1)[0]
    if kind == "service":
        return "s:" + (ctx.match.route.route.service if ctx.match else "")
    peer = flow.client_conn.peername
    return "i:" + (peer[0] if peer else "")


def _key(rule: CompiledRule, ctx: FlowContext, flow: http.HTTPFlow) -> str:
    # hashed: a header value or consumer name never appears in a Redis key or a log line
    digest = hashlib.blake2b(_identity_value(rule, ctx, flow).encode(), digest_size=12).hexdigest()
    return f"{rule.scope}:{digest}"


async def check_request_limits(ctx: FlowContext, flow: http.HTTPFlow) -> http.Response | None:
    """The header phase (after identity): rules that count HTTP requests need no body, so a caller
    over such a limit is refused before its body is read. A request the route's access check
    will refuse anyway is not counted (as Kong's acl runs before its rate limits)."""
    limits = route_limits(ctx.snapshot.policy).get(ctx.route_name or "") if ctx.match is not None else None
    if limits is None or not limits.per_request:
        return None
    if access.check_route_access(ctx, flow) is not None:  # refused later, by the request phases; idempotent
        return None
    return await _check(ctx, flow, limits, limits.per_request)


async def check_limits(ctx: FlowContext, flow: http.HTTPFlow) -> http.Response | None:
    """The request phase (after governance): rules that count MCP methods or tools."""
    limits = route_limits(ctx.snapshot.policy).get(ctx.route_name or "") if ctx.match is not None else None
    if limits is None or not limits.per_message:
        return None
    return await _check(ctx, flow, limits, limits.per_message)


async def _check(ctx: FlowContext, flow: http.HTTPFlow, limits, rules) -> http.Response | None:
    groups = ctx.identity.groups if ctx.identity is not None else ()
    username = ctx.identity.username if ctx.identity is not None else None
    counters = backend.for_route(limits.settings, ctx.snapshot.policy)
    shown: list[tuple[CompiledRule, Outcome]] = list(ctx.limit_results or ())  # the header phase's, if any
    refused: list[tuple[CompiledRule, Outcome]] = []
    counted, checks = [], []
    for rule in rules:
        if not rule.applies(groups, username):
            continue
        cost = rule.cost(ctx.messages) if rule.per_message else 1
        if cost == 0:
            continue
        counted.append(rule)
        checks.append((_key(rule, ctx, flow), rule.windows_for(groups, username), cost,
                       rule.rule.window_type == "sliding", rule.rule.count_refused))
    if not checks:
        return None
    try:  # every rule's counter at once: one Redis round trip however many rules apply
        results = await counters.check_many(checks)
    except backend.Unavailable:
        return gateway_failure(flow.request, "reach the rate limit store")
    for rule, result in zip(counted, results):
        if result.allowed:
            if not rule.rule.shadow:
                shown.append((rule, result))
        elif rule.rule.shadow:
            backend.stats.shadowed += 1
            log.info("route %s: rate limit %d would refuse %s", ctx.route_name, rule.index, _who(ctx))
        else:
            refused.append((rule, result))
    settings = limits.settings
    if refused:
        backend.stats.refused += 1
        log.info("route %s: rate limit %d refused %s", ctx.route_name, refused[0][0].index, _who(ctx))
        headers = client_headers(refused + shown) if not settings.hide_client_headers else {}
        headers["Retry-After"] = str(max(o.retry_after for _, o in refused))  # kept when headers are hidden: it is the answer
        return _refusal(ctx, flow, refused, headers)
    ctx.limit_results = shown
    if shown and not settings.hide_client_headers:
        ctx.limit_headers = client_headers(shown)
    return None


def _who(ctx: FlowContext) -> str:
    return f"consumer {ctx.identity.username!r}" if ctx.identity is not None else "an anonymous caller"


def _refusal(ctx: FlowContext, flow: http.HTTPFlow, refused: list[tuple[CompiledRule, Outcome]],
             headers: dict[str, str]) -> http.Response:
    settings = route_limits(ctx.snapshot.policy)[ctx.route_name or ""].settings
    if any(rule.rule.error == "http" for rule, _ in refused) or flow.request.method != "POST":
        return json_response(settings.error_code, {"message": settings.error_message}, headers)
    errors = []
    for m in ctx.messages:
        if m.kind != "request":
            continue
        limited = [(rule, o) for rule, o in refused if rule.cost([m])]
        if limited:
            retry = max(o.retry_after for _, o in limited)
            errors.append(jsonrpc_error(m.id, RATE_LIMITED, settings.error_message, {"retry_after": retry}))
        else:
            errors.append(jsonrpc_error(m.id, INVALID_REQUEST, "Not forwarded: another message of this batch was refused"))
    return jsonrpc_errors_response(flow.request, errors, batch=ctx.is_batch, status=200, headers=headers)


def add_headers(ctx: FlowContext, flow: http.HTTPFlow) -> http.Response | None:
    """The phase (pipeline: response headers): the windows' state after this request."""
    if ctx.limit_headers and flow.response is not None:
        for name, value in ctx.limit_headers.items():
            flow.response.headers[name] = value
    return None
