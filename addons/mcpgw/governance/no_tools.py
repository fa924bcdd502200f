"""Callers no tool is allowed to (`acl.refuse_without_tools`): refused outright, as Kong's
ai-mcp-proxy does (its how-to "use access controls for MCP tools": a consumer of a group denied
every tool cannot connect), instead of being served an empty tool list.

"Allowed no tool" is decided from the policy alone, before the upstream's catalog is known: the
route's default for tools denies the caller and so does every tool's own ACL. A caller some
unlisted tool would be allowed to (a default that admits it) is never refused here."""

from __future__ import annotations

import logging

from mitmproxy import http

from ..context import Decision, FlowContext
from ..protocol.jsonrpc import INVALID_PARAMS
from ..responses import denied_with_reason, insufficient_scope, json_response, jsonrpc_error, jsonrpc_errors_response
from . import annotate
from .acl import route_acl
from .engine import SubjectView, audience, view

log = logging.getLogger("mcpgw.governance")

def allows_no_tool(subject_view: SubjectView) -> bool:
    return not subject_view.default_tool.allowed and not any(v.allowed for v in subject_view.tools.values())


def refuse_without_tools(ctx: FlowContext, flow: http.HTTPFlow) -> http.Response | None:
    """The phase (pipeline: governance, before per-tool enforcement)."""
    settings = ctx.match.route.route.acl if ctx.match is not None else None
    if settings is None or not settings.refuse_without_tools or settings.shadow:
        return None
    acl = route_acl(ctx.snapshot.policy, ctx.route_name)
    assert acl is not None  # the route has acl settings
    subject_view = view(acl, ctx.identity, ctx.token_claims)
    if not allows_no_tool(subject_view):
        return None
    text = f"No tool is available for {audience(ctx.identity, acl)}"
    caller = annotate.caller_label(ctx.identity)
    log.info("route %s: refused %s: no tool is allowed to it", ctx.route_name, caller)
    requests = [m for m in ctx.messages if m.kind == "request"]
    decisions = [Decision(False, m.method, "tool", None, "acl: no tool allowed", "no tool allowed", m.id)
                 for m in requests] or [Decision(False, flow.request.method, "tool", None, "acl: no tool allowed",
                                                 "no tool allowed")]
    ctx.decisions.extend(decisions)
    annotate.annotate(flow, caller, decisions)
    http403 = settings.deny_response == "http403"
    if not requests:  # a GET stream, a DELETE, notifications: nothing to answer in JSON-RPC
        if not http403:
            return json_response(403, {"message": text})
        return json_response(403, {"message": text, "error": "insufficient_scope", "error_description": text},
                             insufficient_scope(text))
    errors = [jsonrpc_error(m.id, INVALID_PARAMS, text) for m in requests]
    if not http403:
        return jsonrpc_errors_response(flow.request, errors, batch=ctx.is_batch)
    return jsonrpc_errors_response(flow.request, [denied_with_reason(e) for e in errors], batch=ctx.is_batch,
                                   status=403, headers=insufficient_scope(text))

