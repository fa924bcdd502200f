"""Client -> server messages: each governed POST body is parsed once, strictly, here; every later
phase reads `ctx.messages`. What cannot be parsed unambiguously is refused, never forwarded."""

from __future__ import annotations

from mitmproxy import http

from .headers import header
from .context import FlowContext
from .protocol.jsonrpc import JsonRpcParseError, parse_strict
from .responses import json_response, jsonrpc_error, jsonrpc_errors_response


def parse_client_messages(ctx: FlowContext, flow: http.HTTPFlow) -> http.Response | None:
    req = flow.request
    if req.method != "POST":
        return None
    ctype = header(req.headers, "content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return json_response(415, {"message": "MCP requests must be POSTed as application/json"})
    if header(req.headers, "content-encoding", "identity").strip().lower() != "identity":
        return json_response(415, {"message": "compressed request bodies are not accepted"})
    try:
        body = req.raw_content or b""
        ctx.messages, ctx.is_batch = parse_strict(body)
        ctx.parsed = (body, tuple(ctx.messages), ctx.is_batch)
    except JsonRpcParseError as e:
        return jsonrpc_errors_response(req, [jsonrpc_error(e.id, e.code, e.message)], status=400)
    return None
