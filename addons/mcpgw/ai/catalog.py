"""The tool catalog of an MCP route, for allowed_tools when the route's ACL allows tools by
default (mcp_tools.py): the names an ACL does not list are only known from the server.

The gateway asks the route's upstream itself (initialize, notifications/initialized, tools/list
with every page) with the route's stored credential, as the caller's credential mediation would
send it. A catalog is kept per policy version, route and credential plan for CATALOG_TTL
seconds; a failure is kept for FAILURE_TTL, and the caller gets the ACL's explicit names only
(fail closed). A passthrough route holds no credential to ask with: its catalog is the tool
names its `tools/list` answers carried through the gateway (any caller's, every page, unfiltered;
governance/filtering.py's observers) within CATALOG_TTL; none seen yet: the ACL's names only."""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import httpx
from mitmproxy import http

from .. import credentials

if TYPE_CHECKING:
    from ..context import FlowContext

log = logging.getLogger("mcpgw.ai")

CATALOG_TTL = 300.0
FAILURE_TTL = 30.0
MAX_PAGES = 50
TIMEOUT = httpx.Timeout(10.0)
_INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "mcp-gateway-catalog", "version": "1"}}
# (id(policy), route, plan label) -> (policy, fetched at, names or None)
_cache: dict[tuple[int, str, str], tuple[Any, float, frozenset[str] | None]] = {}


def _result(resp: httpx.Response, want_id: int) -> dict:
    resp.raise_for_status()
    ctype = resp.headers.get("content-type", "").split(";")[0].strip()
    messages: list[Any] = []
    if ctype == "text/event-stream":
        for line in resp.text.splitlines():
            if line.startswith("data:"):
                try:
                    messages.append(json.loads(line[5:]))
                except ValueError:
                    continue
    else:
        messages.append(resp.json())
    for m in messages:
        if isinstance(m, dict) and m.get("id") == want_id:
            if "error" in m or not isinstance(m.get("result"), dict):
                raise ValueError(f"the server answered {str(m.get('error'))[:200]}")
            return m["result"]
    raise ValueError("no answer to the request")


async def _fetch(url: str, headers: dict[str, str]) -> frozenset[str]:
    base = {**headers, "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as client:
        resp = await client.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": _INIT}, headers=base)
        init = _result(resp, 1)
        if sid := resp.headers.get("mcp-session-id"):
            base["Mcp-Session-Id"] = sid
        if version := init.get("protocolVersion"):
            base["MCP-Protocol-Version"] = str(version)
        await client.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=base)
        names: set[str] = set()
        cursor = None
        for page in range(MAX_PAGES):
            params = {"cursor": cursor} if cursor else {}
            result = _result(await client.post(url, json={"jsonrpc": "2.0", "id": 2 + page, "method": "tools/list",
                                                          "params": params}, headers=base), 2 + page)
            names.update(t["name"] for t in result.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("name"), str))
            cursor = result.get("nextCursor")
            if not cursor:
                break
        if sid:
            try:
                await client.delete(url, headers=base)
            except httpx.HTTPError:
                pass
        return frozenset(names)


# passthrough routes: route -> tool name -> when a tools/list answer last carried it
_seen: dict[str, dict[str, float]] = {}
MAX_SEEN = 10_000  # names kept per route: an upstream cannot grow the gateway's memory without bound


def observe_list(route: str, method: str, entries: list[Any]) -> None:
    """A governed route's list answer as it passes (before the caller's filter)."""
    if method != "tools/list":
        return
    try:
        names = _seen.setdefault(route, {})
        now = time.monotonic()
        for entry in entries:
            name = entry.get("name") if isinstance(entry, dict) else None
            if isinstance(name, str) and len(name) <= 256 and (name in names or len(names) < MAX_SEEN):
                names[name] = now
    except Exception:  # never in the way of the list answer itself; only the catalog misses it
        log.exception("could not note route %s's tool names", route)


def seen_names(route: str) -> frozenset[str] | None:
    names = _seen.get(route)
    now = time.monotonic()
    fresh = frozenset(n for n, at in (names or {}).items() if now - at < CATALOG_TTL)
    return fresh or None


async def tool_names(ctx: "FlowContext", route_name: str) -> frozenset[str] | None:
    policy = ctx.snapshot.policy
    compiled = credentials.route_credentials(policy, route_name)  # compiled once per policy
    if compiled is None:
        return seen_names(route_name)  # passthrough: what the route's own tools/list answers listed
    ident = ctx.identity
    if (ident is None or ident.method == "anonymous") and not compiled.config.allow_anonymous:
        return None
    plan = compiled.plan_for(ident)
    key = (id(policy), route_name, plan.label)
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and hit[0] is policy and now - hit[1] < (CATALOG_TTL if hit[2] is not None else FAILURE_TTL):
        return hit[2]
    route = policy.routes[route_name]
    url = policy.services[route.service].url
    fake = http.Request.make("POST", url)
    fake.headers = http.Headers()
    plan.apply(fake)
    headers = dict(fake.headers.items())
    try:
        names: frozenset[str] | None = await _fetch(fake.url, headers)
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
        log.warning("route %s: could not fetch its tool catalog (%s); allowed_tools keeps the ACL's names only",
                    route_name, type(e).__name__)
        names = None
    for k in [k for k, v in _cache.items() if v[0] is not policy]:
        del _cache[k]  # older policy versions
    _cache[key] = (policy, now, names)
    return names
