"""Methods the request's MCP revision removed (protocol/jsonrpc.py REMOVED_REQUESTS_BY_REVISION),
on routes with an `acl`: answered 404 with -32601 (Method not found), as that revision's servers
answer them over HTTP, before enforcement judges their params. Otherwise a `resources/subscribe`
under 2026-07-28 would get enforcement's 400 for a missing `params.uri`, and a `tasks/result`
its denial of an unknown task, where the server says the method does not exist.

The revision is the client's `MCP-Protocol-Version`; trusting it is safe because it can only turn
a request into a refusal: a client that names an older revision is governed as before."""

from __future__ import annotations

import logging

from mitmproxy import http

from ..context import Decision, FlowContext
from ..headers import header_values
from ..protocol.jsonrpc import INVALID_REQUEST, METHOD_NOT_FOUND, removed_in
from ..responses import jsonrpc_error, jsonrpc_errors_response
from . import annotate
from .acl import route_acl
from .ledger import id_key

log = logging.getLogger("mcpgw.governance")


def refuse_removed_methods(ctx: FlowContext, flow: http.HTTPFlow) -> http.Response | None:
    """The phase (pipeline: governance, before per-message enforcement)."""
    acl = route_acl(ctx.snapshot.policy, ctx.route_name) if ctx.match is not None else None
    if acl is None or acl.shadow or not ctx.messages:  # shadow: the upstream answers, as on an open route
        return None
    revisions = [v.strip() for v in header_values(flow.request.headers, "mcp-protocol-version")]
    removed = {id(m): r for m in ctx.messages for r in revisions if removed_in(m.method, r)}
    if not removed:
        return None
    errors, decisions = [], []
    for m in ctx.messages:
        message_id = m.id if m.kind == "request" and id_key(m.id) is not None else None
        if id(m) in removed:
            errors.append(jsonrpc_error(message_id, METHOD_NOT_FOUND,
                                        f"Method not found: {m.method} is removed in MCP revision {removed[id(m)]}"))
            decisions.append(Decision(False, m.method, rule="revision", reason="removed method", message_id=m.id))
        elif m.kind == "request":  # a batch is refused whole
            errors.append(jsonrpc_error(m.id, INVALID_REQUEST, "Not forwarded: another message of this batch was refused"))
    ctx.decisions.extend(decisions)
    annotate.annotate(flow, annotate.caller_label(ctx.identity), decisions)
    log.info("route %s: %s removed in the request's MCP revision; answered 404", ctx.route_name,
             ", ".join(sorted({d.method or "" for d in decisions})))
    return jsonrpc_errors_response(flow.request, errors, batch=ctx.is_batch, status=404)
