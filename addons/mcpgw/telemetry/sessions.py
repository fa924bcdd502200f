"""MCP session durations (OTel MCP conventions: mcp.server.session.duration, the session as the
gateway serves it to the client, and mcp.client.session.duration, the same session as the gateway
holds it with the upstream: one session id end to end, so one interval, the client one with the
upstream's server.address/port).

A session begins when an `initialize` is answered with an `Mcp-Session-Id` and ends when the
client's DELETE of it is answered (2xx), or when the upstream answers a request of it with 404
(it forgot the session: error.type 404). Only the begin time is kept, by the SHA-256 of the id
(the id itself is a bearer value), for at most MAX_SESSIONS sessions (the oldest are forgotten
first). A session that simply stops being used, one begun before the gateway (re)started, or
one whose begin and end went through different gateway replicas, is not measured."""

from __future__ import annotations

from typing import Any

from mitmproxy import http

from ..headers import header
from .conventions import KNOWN_REVISIONS, session_hash

MAX_SESSIONS = 100_000


class SessionClock:
    def __init__(self) -> None:
        self._began: dict[str, float] = {}  # session hash -> when the initialize was answered

    def observe(self, flow: http.HTTPFlow, records: list[dict[str, Any]]) -> tuple[float, str | None] | None:
        """Notes a session begun by this flow; returns (duration s, error.type) of one it ended."""
        req, resp = flow.request, flow.response
        if resp is None:
            return None
        sent = header(req.headers, "mcp-session-id")
        if sent is None:
            issued = header(resp.headers, "mcp-session-id")
            if issued and resp.status_code < 300 and any(
                    (r.get("jsonrpc") or {}).get("method") == "initialize" for r in records):
                if len(self._began) >= MAX_SESSIONS:
                    del self._began[next(iter(self._began))]
                self._began[session_hash(issued)] = resp.timestamp_start or req.timestamp_start
            return None
        if req.method == "DELETE" and resp.status_code < 300:
            err = None
        elif resp.status_code == 404 and records[0]["http"]["upstream_status"] == 404:
            err = "404"
        else:
            return None
        began = self._began.pop(session_hash(sent), None)
        if began is None:
            return None
        end = resp.timestamp_end or resp.timestamp_start or began
        return max(0.0, end - began), err


def attributes(flow: http.HTTPFlow, route: str | None, err: str | None) -> dict[str, Any]:
    """The server metric's attributes (the client one adds the upstream's address)."""
    attrs: dict[str, Any] = {"network.transport": "tcp", "network.protocol.name": "http"}
    version = header(flow.request.headers, "mcp-protocol-version")
    if version in KNOWN_REVISIONS:
        attrs["mcp.protocol.version"] = version
    if route:
        attrs["mcpgw.route"] = route
    if err:
        attrs["error.type"] = err
    return attrs
