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
                raise CatalogError(f"{message['method']}: {m['error'].get('message')}")
            return m.get("result"), resp
    raise CatalogError(f"{message['method']}: no answer from {url}")


def fetch_tools(url: str, headers: dict[str, str] | None = None, timeout: float = 30.0) -> list[dict[str, Any]]:
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
        tools: list[dict[str, Any]] = []
        cursor = None
        try:
            for page in range(MAX_PAGES):
                params = {"cursor": cursor} if cursor else {}
                result, _ = _rpc(client, url, h, {"jsonrpc": "2.0", "id": page + 2, "method": "tools/list",
                                                  "params": params})
                entries = (result or {}).get("tools")
                if not isinstance(entries, list):
                    raise CatalogError("tools/list: the answer has no tools array")
                tools += [t for t in entries if isinstance(t, dict) and isinstance(t.get("name"), str)]
                cursor = (result or {}).get("nextCursor")
                if not cursor:
                    return tools
            raise CatalogError(f"tools/list: more than {MAX_PAGES} pages")
        finally:
            if session:
                try:
                    client.delete(url, headers=h)
                except httpx.HTTPError:
                    pass
