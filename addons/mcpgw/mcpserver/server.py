"""The gateway as the MCP server of a route whose tools are REST operations (rest_tools/).

A pipeline phase, at the place where a request would be forwarded: identity, route access, the
ACL (which decided every tools/call and installed the list filter), limits and credential
mediation have run exactly as for an upstream. Streamable HTTP, tools only:

  POST  initialize (version negotiated, a session issued and bound to the caller), ping,
        tools/list (paginated, then filtered by the route's server transforms as an upstream's
        list would be), tools/call (arguments validated, the REST call made); notifications and
        client responses are accepted (202); other methods: -32601. JSON or SSE, per Accept.
  GET   405: this server opens no stream (the spec allows it).
  DELETE ends the caller's session.

Every request but initialize needs the session (400 without one; check_session has already
answered 404 for a session that is not the caller's)."""

from __future__ import annotations

import base64
import logging
import secrets
from typing import Any

from mitmproxy import http

from ..context import FlowContext
from ..headers import header
from ..protocol.jsonrpc import INVALID_PARAMS, INVALID_REQUEST, JsonRpcParseError, dumps, parse_strict
from ..responses import JSON, SSE, json_response, jsonrpc_error, jsonrpc_errors_response
from ..rest_tools import call as rest_call
from ..rest_tools.catalog import Catalog, catalog
from ..rest_tools.request import BadArguments, build_request
from ..rest_tools.spans import RestCall
from ..sessions import binding as sessions

log = logging.getLogger("mcpgw.mcpserver")

METHOD_NOT_FOUND = -32601
VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")  # newest first
SERVER_VERSION = "mcp-gateway"


def _negotiate(params: Any) -> str:
    asked = params.get("protocolVersion") if type(params) is dict else None
    return asked if asked in VERSIONS else VERSIONS[0]  # otherwise the newest: the client decides whether to go on


def _result(message_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": message_id, "result": result}


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"tools:{offset}".encode()).decode().rstrip("=")


def _offset(cursor: Any, total: int) -> int | None:
    if cursor is None:
        return 0
    if type(cursor) is not str:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:
        return None
    kind, _, number = text.partition(":")
    return int(number) if kind == "tools" and number.isdigit() and int(number) < max(total, 1) else None


def _list(cat: Catalog, message_id: Any, params: Any) -> dict[str, Any]:
    tools = cat.definitions
    offset = _offset(params.get("cursor") if type(params) is dict else None, len(tools))
    if offset is None:
        return jsonrpc_error(message_id, INVALID_PARAMS, "Invalid cursor")
    size = cat.settings.server.page_size
    result: dict[str, Any] = {"tools": list(tools[offset:offset + size])}
    if offset + size < len(tools):
        result["nextCursor"] = _cursor(offset + size)
    return _result(message_id, result)


async def _call(ctx: FlowContext, flow: http.HTTPFlow, cat: Catalog, message_id: Any, params: Any) -> dict[str, Any]:
    name = params.get("name") if type(params) is dict else None
    tool = cat.tools.get(name) if type(name) is str else None
    if tool is None:
        return jsonrpc_error(message_id, INVALID_PARAMS, f"Unknown tool: {name!s:.128}")
    arguments = params.get("arguments", {})
    if arguments is None:
        arguments = {}
    if type(arguments) is not dict:
        return jsonrpc_error(message_id, INVALID_PARAMS, f"Invalid arguments for tool {name}: arguments must be an object")
    problems = sorted(tool.validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    if problems:
        first = problems[0]
        where = "/".join(str(p) for p in first.absolute_path) or "arguments"
        return jsonrpc_error(message_id, INVALID_PARAMS, f"Invalid arguments for tool {name}: {where}: {first.message}")
    try:
        rest = build_request(tool, arguments)
        request = rest_call.outbound(ctx, flow, tool, rest, cat.settings.server.forward_client_headers)
    except BadArguments as e:
        return jsonrpc_error(message_id, INVALID_PARAMS, f"Invalid arguments for tool {name}: {e}")
    except rest_call.Refused as e:
        return _result(message_id, {"content": [{"type": "text", "text": str(e)}], "isError": True})
    result, note = await rest_call.send(request, cat.settings.server, f"{ctx.route_name}/{name}",
                                        tool.match.route.route.upstream_proxy)  # the tool's route's, as its credentials
    start_ns, end_ns = note.pop("start_ns"), note.pop("end_ns")
    ctx.audit_fields.setdefault("rest_tools", []).append({"tool": name, "route": tool.home, **note})
    ctx.rest_calls.append(RestCall(message_id, request.method, request.scheme, request.host, request.port,
                                   note["path"], start_ns, end_ns, note.get("status"), note.get("error")))
    return _result(message_id, result)


async def _answer(ctx: FlowContext, flow: http.HTTPFlow, cat: Catalog, message) -> dict[str, Any]:
    method, message_id, params = message.method, message.id, message.params
    if method == "initialize":
        server = cat.settings.server
        return _result(message_id, {
            "protocolVersion": _negotiate(params),
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": server.name or cat.route, "version": SERVER_VERSION},
        })
    if method == "ping":
        return _result(message_id, {})
    if method == "tools/list":
        return _list(cat, message_id, params)
    if method == "tools/call":
        return await _call(ctx, flow, cat, message_id, params)
    return jsonrpc_error(message_id, METHOD_NOT_FOUND, f"Method not found: {method!s:.128}")


def _filtered(ctx: FlowContext, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The route's server transforms (the ACL's list filter, integrity's checks) applied to the
    gateway's own answers, as they are to an upstream's; then cleared, so that the response
    phases do not apply them a second time."""
    transforms, ctx.server_transforms = ctx.server_transforms, []
    out = []
    for answer in answers:
        for transform in transforms:
            answer = transform(answer)
        out.append(answer)
    return out


def _respond(request: http.Request, answers: list[dict[str, Any]], batch: bool,
             extra: dict[str, str]) -> http.Response:
    accept = header(request.headers, "accept", "").lower()
    wants_json = not accept or JSON in accept or "*/*" in accept or "application/*" in accept
    headers = {"Cache-Control": "no-store", **extra}
    if wants_json:
        body = dumps(answers if batch else answers[0])
        return http.Response.make(200, body, {"Content-Type": JSON, **headers})
    if SSE in accept:
        events = b"".join(b"event: message\ndata: " + dumps(a) + b"\n\n" for a in answers)
        return http.Response.make(200, events, {"Content-Type": SSE, **headers})
    return json_response(406, {"message": "Accept application/json or text/event-stream"})


def _method_not_allowed(method: str) -> http.Response:
    return json_response(405, {"message": f"Method {method} is not allowed: this MCP server answers POST and DELETE "
                                          "and opens no GET stream"}, {"Allow": "POST, DELETE"})


async def serve(ctx: FlowContext, flow: http.HTTPFlow) -> http.Response | None:
    """The phase (pipeline: in place of forwarding, on rest_tools routes)."""
    route = ctx.match.route.route if ctx.match is not None and ctx.match.kind == "mcp" else None
    settings = route.rest_tools if route is not None else None
    if settings is None:
        return None
    if settings.mode == "conversion-only":
        return json_response(404, {"message": "This route's tools are served by the listener routes that name its "
                                              "tag (rest_tools mode conversion-only)"})
    cat = catalog(ctx.snapshot.policy, ctx.route_name)
    if cat is None:  # a serving route always has one (the policy loaded): never forward instead
        return json_response(500, {"message": "the route's tool catalog is missing"})
    request = flow.request
    if request.method == "DELETE":
        if ctx.session_id is None:
            return json_response(400, {"message": "DELETE needs the Mcp-Session-Id of the session to end"})
        await sessions.end_issued(ctx, ctx.session_id)
        return http.Response.make(200, b"", {"Cache-Control": "no-store"})
    if request.method != "POST":
        return _method_not_allowed(request.method)
    return await _post(ctx, flow, cat)


async def _post(ctx: FlowContext, flow: http.HTTPFlow, cat: Catalog) -> http.Response:
    request = flow.request
    # The body as the phases left it, which is what would be forwarded, not ctx.messages as parsed
    # on arrival: governance replaces a denied call by a stand-in when the client reads no SSE, and
    # the stand-in's answer becomes the denial (one more parse of a small body, on these routes only).
    try:
        messages, batch = parse_strict(request.raw_content or b"")
    except JsonRpcParseError:
        return json_response(500, {"message": "the request body was changed into something that is not JSON-RPC"})
    requests = [m for m in messages if m.kind == "request"]
    initializing = any(m.method == "initialize" for m in requests)
    extra: dict[str, str] = {}
    if initializing:
        if batch or len(messages) != 1:
            return jsonrpc_errors_response(request, [jsonrpc_error(None, INVALID_REQUEST,
                                                                   "initialize must be sent alone")], status=400)
        session = secrets.token_urlsafe(32)
        if not await sessions.bind_issued(ctx, session):
            return json_response(500, {"message": "could not open a session"})
        ctx.session_id = extra["Mcp-Session-Id"] = session
    elif ctx.session_id is None:
        first = requests[0].id if requests else None
        return jsonrpc_errors_response(request, [jsonrpc_error(first, INVALID_REQUEST, "Bad Request: the "
                                                               "Mcp-Session-Id header is required")], status=400)
    if not requests:  # notifications and responses only: accepted, nothing to answer
        return http.Response.make(202, b"", {"Cache-Control": "no-store"})
    answers = [await _answer(ctx, flow, cat, m) for m in requests]
    return _respond(request, _filtered(ctx, answers), batch, extra)
