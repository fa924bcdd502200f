"""Fetching a route's tool catalog for `mcp-gateway pin` and `scan`: a minimal Streamable HTTP
client (initialize, notifications/initialized, every page of tools/list, DELETE of the session)
over httpx, which the gateway already depends on; the MCP SDK is a test dependency only.

It talks to the route's upstream directly, not through the gateway: a gateway enforcing pins
would withhold exactly the tools being approved. Its credential is the one given on the command
line, or else the route's injected one (credentials: mode inject, its add/replace headers)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from ..protocol.sse import SSEParser

PROTOCOL_VERSION = "2025-06-18"
MAX_PAGES = 1000


class CatalogError(Exception):
    pass


class MethodNotFound(CatalogError):
    pass


def route_headers(route: Any) -> dict[str, str]:
    """The headers the gateway would inject upstream on this route (its stored credential)."""
    creds = route.credentials
    if creds is None or creds.mode != "inject":
        return {}
    return {name: value.reveal() for name, value in (*creds.add.headers, *creds.replace.headers)}


def _messages(resp: httpx.Response) -> list[dict[str, Any]]:
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "text/event-stream":
        parser = SSEParser()
        events = parser.feed(resp.content) + parser.flush()
        out = []
        for ev in events:
            if ev.data and ev.event in (None, "", "message"):
                out.append(json.loads(ev.data))
        return out
    if ctype == "application/json":
        body = resp.json()
        return body if isinstance(body, list) else [body]
    return []


def _rpc(client: httpx.Client, url: str, headers: dict[str, str], message: dict[str, Any]) -> tuple[dict | None, httpx.Response]:
    resp = client.post(url, json=message, headers=headers)
    if resp.status_code >= 400:
        raise CatalogError(f"{message['method']}: HTTP {resp.status_code} from {url}")
    if "id" not in message:
        return None, resp
    for m in _messages(resp):
        if m.get("id") == message["id"]:
            if "error" in m:
                error = m["error"] if isinstance(m["error"], dict) else {}
                raise (MethodNotFound if error.get("code") == -32601 else CatalogError)(
                    f"{message['method']}: {error.get('message')}")
            return m.get("result"), resp
    raise CatalogError(f"{message['method']}: no answer from {url}")


def fetch_tools(url: str, headers: dict[str, str] | None = None, timeout: float = 30.0) -> list[dict[str, Any]]:
    return fetch_catalog(url, headers, timeout)["tools"]


def fetch_catalog(url: str, headers: dict[str, str] | None = None, timeout: float = 30.0,
                  lists: tuple[tuple[str, str, str], ...] = (("tools/list", "tools", "name"),)) -> dict[str, list]:
    """Every page of each list: (method, result member, id member) -> {member: entries}. A list
    the server does not have (method not found) is empty; tools/list must answer."""
    base = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json", **(headers or {})}
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                           "clientInfo": {"name": "mcp-gateway-pin", "version": "0"}}}
        result, resp = _rpc(client, url, base, init)
        session = resp.headers.get("mcp-session-id")
        version = (result or {}).get("protocolVersion", PROTOCOL_VERSION)
        h = {**base, "MCP-Protocol-Version": version, **({"Mcp-Session-Id": session} if session else {})}
        _rpc(client, url, h, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        ids = iter(range(2, 10**9))
        try:
            return {member: _pages(client, url, h, method, member, ident, ids) for method, member, ident in lists}
        finally:
            if session:
                try:
                    client.delete(url, headers=h)
                except httpx.HTTPError:
                    pass


def _pages(client: httpx.Client, url: str, h: dict[str, str], method: str, member: str, ident: str, ids) -> list:
    entries: list[dict[str, Any]] = []
    cursor = None
    for _ in range(MAX_PAGES):
        params = {"cursor": cursor} if cursor else {}
        try:
            result, _ = _rpc(client, url, h, {"jsonrpc": "2.0", "id": next(ids), "method": method, "params": params})
        except MethodNotFound:
            if method == "tools/list":
                raise
            return []  # the server has no such list
        found = (result or {}).get(member)
        if not isinstance(found, list):
            raise CatalogError(f"{method}: the answer has no {member} array")
        entries += [e for e in found if isinstance(e, dict) and isinstance(e.get(ident), str)]
        cursor = (result or {}).get("nextCursor")
        if not cursor:
            return entries
    raise CatalogError(f"{method}: more than {MAX_PAGES} pages")
