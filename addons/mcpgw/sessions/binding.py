"""Session binding: an MCP session belongs to the caller that opened it.

The gateway records who opened each session it sees issued on a route: the `Mcp-Session-Id` an
upstream returns on `initialize`, and the legacy `session_id` in the `endpoint` event of a
legacy HTTP+SSE GET stream. A later request carrying a session id (the header, a look-alike of
it, or the legacy query parameter) is forwarded only when that session is bound to the same
caller; anything else (another caller, no credential, a session the gateway never saw issued,
one ended or idle past `gateway.sessions.idle_ttl`) is answered 404, as MCP answers an unknown
session, and never reaches the upstream. A DELETE the upstream accepted, or an upstream 404 for
the session, ends the binding.

Bindings live in a `state.SessionStore`, not in the policy snapshot: they survive policy
reloads, and `handover` keeps the store on the mitmproxy master so that a script reload (which
re-imports this package) hands the same store to the new code."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from mitmproxy import http

from .. import headers
from ..headers import header
from ..protocol.jsonrpc import INVALID_REQUEST
from ..protocol.sse import SSEEvent
from ..responses import json_response, jsonrpc_error, jsonrpc_errors_response
from ..state.handover import kept_on
from ..state import MemorySessionStore, SessionStore, run_now
from .caller import caller_key

if TYPE_CHECKING:
    from ..context import FlowContext

log = logging.getLogger("mcpgw.sessions")

SESSION_HEADER = b"mcp-session-id"
LEGACY_PARAMS = frozenset({"session_id", "sessionid"})  # the Python SDK's and the TypeScript SDK's names
NOT_FOUND = "Session not found"
_MASTER_ATTRIBUTE = "_mcp_gateway_sessions"

_store: SessionStore = MemorySessionStore()


def use(store: SessionStore) -> None:
    global _store
    _store = store


def handover(master: object) -> SessionStore:
    """The store kept on the mitmproxy master (created on first use), now used by the phases."""
    store = kept_on(master, _MASTER_ATTRIBUTE, MemorySessionStore)
    use(store)
    return store


def presented(request: http.Request) -> list[str]:
    """Every session id the request carries. Header names are compared with `_` read as `-`, as
    CGI-style servers read them; query names case-insensitively, decoded as servers decode them."""
    found: list[str] = []
    for name, values in headers.index(request.headers).items():
        if name == SESSION_HEADER or (b"_" in name and name.replace(b"_", b"-") == SESSION_HEADER):
            found += values
    path = request.path
    if "?" in path:
        found += [v for k, v in parse_qsl(path.partition("?")[2], keep_blank_values=True) if k.lower() in LEGACY_PARAMS]
    return found


def _ttl(ctx: "FlowContext") -> float:
    return ctx.snapshot.policy.gateway.sessions.idle_ttl


def unknown_session(request: http.Request) -> http.Response:
    if request.method == "POST":  # the body is not read yet: no JSON-RPC id to answer
        return jsonrpc_errors_response(request, [jsonrpc_error(None, INVALID_REQUEST, NOT_FOUND)], status=404)
    return json_response(404, {"message": NOT_FOUND})


async def check_session(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """Identity phase, right after authentication: a session id must be the caller's own."""
    if ctx.match is None or ctx.match.kind != "mcp":
        return None
    request = flow.request
    owner = caller_key(ctx, request)
    sessions = presented(request)
    if not sessions:
        return None
    route = ctx.route_name or ""
    for session in dict.fromkeys(sessions):
        if await _store.owner(route, session) != owner:
            log.info("route %s: %s %s carries a session that is not the caller's; answered 404",
                     route, request.method, ctx.identity.username if ctx.identity else "(no consumer)")
            return unknown_session(request)
    ctx.session_id = sessions[0]
    ttl = _ttl(ctx)
    for session in dict.fromkeys(sessions):
        await _store.touch(route, session, ttl)
    return None


def record_session(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """Response headers phase: bind sessions the upstream issues, end those it ended."""
    if ctx.match is None or ctx.match.kind != "mcp" or ctx.caller is None or ctx.answered_by is not None:
        return None  # (mitmproxy runs this hook for the gateway's own answers too: those say nothing)
    request, response = flow.request, flow.response
    assert response is not None
    route = ctx.route_name or ""
    status = response.status_code
    if status == 404 or (request.method == "DELETE" and 200 <= status < 300):
        if ctx.session_id is not None:  # every session presented was checked as the caller's
            for session in dict.fromkeys(presented(request)):
                run_now(_store.end(route, session))
        return None
    if not 200 <= status < 300:
        return None
    if request.method == "POST" and any(m.method == "initialize" for m in ctx.messages):
        issued = header(response.headers, "mcp-session-id")
        if issued and not _bind(ctx, issued):
            return json_response(502, {"message": "the upstream issued a session that belongs to another caller"})
        if issued:
            ctx.session_id = issued
    elif request.method == "GET" and header(response.headers, "content-type", "").lower().startswith("text/event-stream"):
        ctx.event_transforms.append(_EndpointWatcher(ctx))
    return None


def _bind(ctx: "FlowContext", session: str) -> bool:
    """Bind `session` to this flow's caller; False when it is already another caller's."""
    done, owner = run_now(_store.bind(ctx.route_name or "", session, ctx.caller or "", _ttl(ctx)))
    if done and owner != ctx.caller:
        log.error("route %s: the upstream issued a session id already bound to another caller; refused",
                  ctx.route_name)
        return False
    return True


async def bind_issued(ctx: "FlowContext", session: str) -> bool:
    """A session the gateway issues itself (mcpserver/): bound to the caller like an upstream's;
    False when the id is somehow already another caller's."""
    assert ctx.caller is not None  # check_session has keyed the caller at request headers
    return await _store.bind(ctx.route_name or "", session, ctx.caller, _ttl(ctx)) == ctx.caller


async def end_issued(ctx: "FlowContext", session: str) -> None:
    """The caller ended a session the gateway issued (DELETE)."""
    await _store.end(ctx.route_name or "", session)


class _EndpointWatcher:
    """SSE event transform of a GET stream: binds the legacy session named by the `endpoint`
    event before the client can learn the endpoint (an event that cannot be bound is withheld)."""

    __slots__ = ("ctx",)

    def __init__(self, ctx: "FlowContext"):
        self.ctx = ctx

    def __call__(self, event: SSEEvent) -> SSEEvent:
        if event.event != "endpoint" or event.data is None:
            return event
        query = urlsplit(event.data.strip()).query
        sessions = [v for k, v in parse_qsl(query, keep_blank_values=True) if k.lower() in LEGACY_PARAMS]
        for session in sessions:
            if not _bind(self.ctx, session):
                return SSEEvent(comments=["mcp-gateway: endpoint withheld (session belongs to another caller)"])
        if sessions:
            self.ctx.session_id = sessions[0]
        return event
