"""MCP tools inside Responses requests: the provider calls those servers itself, so the gateway
governs them in the request that names them, for the caller C of the LLM route.

- `server_url` must name one of the policy's MCP routes, by its upstream URL or by its gateway
  URL; any other is refused 400 naming the server (unless `ai.mcp.allow_unknown_servers`).
  `connector_id` tools pass only when listed in `ai.mcp.connectors`.
- `allowed_tools` becomes the tools C may call on that route, from the same decision function
  as `tools/list` filtering and `tools/call` enforcement (governance/engine.py), intersected with
  what the client asked. When the route's ACL allows tools by default, only the names the ACL
  lists are known from the ACL, the others from the route's catalog, which the gateway fetches
  with the route's stored credential (catalog.py); without one, only the ACL's names (fail
  closed). C may call none: 403.
- A route that injects a stored credential (credentials: inject) has it put into the tool's
  `headers` in place of the client's (the client's `authorization` goes too): agents never hold
  the MCP server's credential. A passthrough route keeps the client's.
- `ai.mcp.require_approval` forces approval per tool.
- `ai.mcp.rewrite_server_url` sends the provider to the MCP route's URL on this gateway instead,
  so that its calls come back through the route and are governed a second time, call by call.

The answer's `mcp_list_tools` items are filtered to the same names and each `mcp_call` item is
audited (answers.py, auditing.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mitmproxy import http

from .. import credentials
from . import catalog
from ..governance import annotate
from ..governance.acl import route_acl
from ..governance.engine import view
from ..policy.derived import PerPolicy
from .request import LlmState, ai_error

# Told of each finished mcp_call item (the state, the call as audited): telemetry/llm_tools.py makes spans of them.
CALL_OBSERVERS: list[Any] = []

if TYPE_CHECKING:
    from ..context import FlowContext
    from ..policy.models import Policy


def _key(url: str) -> tuple[str, str, int, str] | None:
    """A URL as MCP server URLs are compared: scheme, host, port, path without trailing slash."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower().rstrip("."), port, parts.path.rstrip("/")


@dataclass(frozen=True, slots=True)
class _Index:
    by_upstream: dict[tuple[str, str, int, str], str]  # service URL -> MCP route (first in file order)
    by_prefix: tuple[tuple[str, str], ...]  # gateway path prefix -> MCP route, longest first
    gateway_hosts: frozenset[str]


def _build(policy: "Policy") -> _Index:
    upstream: dict[tuple[str, str, int, str], str] = {}
    prefixes = []
    for name, route in policy.routes.items():
        if getattr(route, "ai", None) is not None:
            continue  # an LLM route is no MCP server
        key = _key(policy.services[route.service].url)
        if key is not None:
            upstream.setdefault(key, name)
        prefixes += [(p.rstrip("/"), name) for p in route.paths]
    hosts = frozenset(h for u in policy.gateway.urls if (h := urlsplit(u).hostname)) | frozenset(policy.gateway.hosts)
    return _Index(upstream, tuple(sorted(prefixes, key=lambda p: len(p[0]), reverse=True)), hosts)


_index = PerPolicy(_build)


def find_route(ctx: "FlowContext", url: Any) -> str | None:
    """The MCP route a server_url names: its upstream URL, or its URL on this gateway."""
    key = _key(url) if isinstance(url, str) else None
    if key is None:
        return None
    index = _index(ctx.snapshot.policy)
    if key in index.by_upstream:
        return index.by_upstream[key]
    if key[1] in index.gateway_hosts or key[1] in ctx.public_hosts:
        for prefix, name in index.by_prefix:
            if key[3] == prefix or key[3].startswith(prefix + "/"):
                return name
    return None


async def allowed_tools(ctx: "FlowContext", route_name: str) -> frozenset[str] | None:
    """What the caller may call on the route: None when the route restricts nothing. Names the
    ACL lists, and when its default allows, the route's catalog's (catalog.py; without one the
    listed names only: fail closed)."""
    acl = route_acl(ctx.snapshot.policy, route_name)
    if acl is None or acl.shadow:
        return None  # ungoverned, or shadow mode (which forwards what it would deny)
    v = view(acl, ctx.identity, ctx.token_claims)  # claim-based ACLs (acl_attribute_type: oauth_access_token)
    names = {name for name in acl.tools if v.tool(name).allowed}
    if v.default_tool.allowed:
        found = await catalog.tool_names(ctx, route_name)
        names.update(name for name in found or () if v.tool(name).allowed)
    return frozenset(names)


def _asked(value: Any) -> tuple[frozenset[str] | None, dict | None]:
    """The client's allowed_tools: names (None: all), and the filter object form if it used one."""
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str)), None
    if isinstance(value, dict):
        names = value.get("tool_names")
        return (frozenset(v for v in names if isinstance(v, str)) if isinstance(names, list) else None), value
    return None, None


def _approval(tool: dict, names: list[str], forced: dict[str, str]) -> Any:
    asked = tool.get("require_approval", "always")  # OpenAI's default
    wish = {}
    for name in names:
        if isinstance(asked, str):
            wish[name] = asked
        elif isinstance(asked, dict):
            never = (asked.get("never") or {}).get("tool_names") or []
            wish[name] = "never" if name in never else "always"
        else:
            wish[name] = "always"
        wish[name] = forced.get(name, wish[name])
    values = set(wish.values())
    if len(values) <= 1:
        return values.pop() if values else asked
    return {kind: {"tool_names": [n for n in names if wish[n] == kind]} for kind in ("always", "never")}


def _inject(ctx: "FlowContext", route_name: str, tool: dict) -> http.Response | None:
    compiled = credentials.route_credentials(ctx.snapshot.policy, route_name)  # the MCP route's mediation
    if compiled is None:
        return None  # passthrough: the client's own credential for that server stays
    ident = ctx.identity
    if (ident is None or ident.method == "anonymous") and not compiled.config.allow_anonymous:
        return ai_error(403, f"MCP route {route_name} sends a stored credential and only serves authenticated consumers",
                        code="mcp_server_refused")
    route = ctx.snapshot.policy.routes[route_name]
    sent = tool.get("headers")
    # The MCP route's operations, applied as to a request to that route, to the tool's headers
    fake = http.Request.make("POST", ctx.snapshot.policy.services[route.service].url)
    fake.headers = http.Headers([(str(k).encode("utf-8", "surrogateescape"), str(v).encode("utf-8", "surrogateescape"))
                                 for k, v in (sent.items() if isinstance(sent, dict) else ())])
    names = list(credentials.CLIENT_CREDENTIAL_HEADERS)
    if route.key_auth is not None:
        names += route.key_auth.key_names
    for name in names:
        fake.headers.pop(name, None)
    compiled.plan_for(ident).apply(fake)
    tool["headers"] = dict(fake.headers.items())
    tool.pop("authorization", None)
    return None


def _rewrite(ctx: "FlowContext", route_name: str, tool: dict) -> http.Response | None:
    """The provider calls the MCP route on this gateway instead of the server: the route then
    governs every call (identity from the tool's headers, ACL, its own credential), so no stored
    credential goes into the tool. The base is the policy's first gateway.urls entry, never the
    Host the client sent."""
    policy = ctx.snapshot.policy
    route = policy.routes[route_name]
    if not policy.gateway.urls or not route.paths:
        return ai_error(500, f"MCP route {route_name} has no public URL on this gateway (gateway.urls and a path) "
                             "to send the provider to", kind="server_error", code="mcp_server_unreachable")
    tool["server_url"] = policy.gateway.urls[0] + route.paths[0]
    return None


async def govern_tools(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    state: LlmState | None = ctx.ai
    if state is None or state.body is None or not isinstance(state.body.get("tools"), list):
        return None
    settings = state.settings.mcp
    for tool in state.body["tools"]:
        if not isinstance(tool, dict) or tool.get("type") != "mcp":
            continue
        label = tool.get("server_label")
        if not isinstance(label, str) or not label or label in state.mcp_servers:
            return ai_error(400, "Each MCP tool needs its own server_label", code="invalid_mcp_tool")
        if "connector_id" in tool:
            if tool.get("connector_id") not in settings.connectors or "server_url" in tool:
                return ai_error(400, f"Connector {str(tool.get('connector_id'))[:100]!r} (server_label {label!r}) "
                                     "is not allowed on this route", code="mcp_server_not_allowed")
            state.mcp_servers[label] = (None, None)
            continue
        url = tool.get("server_url")
        route_name = find_route(ctx, url)
        if route_name is None:
            if settings.allow_unknown_servers:
                state.mcp_servers[label] = (None, None)
                continue
            return ai_error(400, f"MCP server {str(url)[:200]!r} (server_label {label!r}) is not one of this "
                                 "gateway's MCP routes", code="mcp_server_not_allowed")
        allowed = await allowed_tools(ctx, route_name)
        if allowed is not None:
            asked, form = _asked(tool.get("allowed_tools"))
            names = sorted(allowed if asked is None else allowed & asked)
            if not names:
                return ai_error(403, f"You may call no tool of MCP server {label!r} here", code="mcp_tools_denied")
            tool["allowed_tools"] = {**form, "tool_names": names} if form is not None else names
            allowed = frozenset(names)
        if settings.require_approval:
            forced_names = sorted(allowed) if allowed is not None else sorted(settings.require_approval)
            tool["require_approval"] = _approval(tool, forced_names, settings.require_approval)
        if settings.rewrite_server_url:
            if (refusal := _rewrite(ctx, route_name, tool)) is not None:
                return refusal
        elif settings.inject_credentials and (refusal := _inject(ctx, route_name, tool)) is not None:
            return refusal
        state.mcp_servers[label] = (route_name, allowed)
        state.dirty = True
        annotate.note(flow, f"{annotate.caller_label(ctx.identity)} MCP server {annotate.printable(label)} -> route "
                            f"{route_name}: " + (f"allowed_tools {len(allowed)}" if allowed is not None else "unrestricted"))
    return None


# -- answers -------------------------------------------------------------------------------------

def filter_item(state: LlmState, item: Any, final: bool) -> bool:
    """An output item of a Responses answer: an mcp_list_tools item keeps only the allowed tools;
    a finished mcp_call item is noted for audit (once per id). Whether the item was changed."""
    if not isinstance(item, dict) or not state.mcp_servers:
        return False
    kind, label = item.get("type"), item.get("server_label")
    route, allowed = state.mcp_servers.get(label, (None, None)) if isinstance(label, str) else (None, None)
    if kind == "mcp_list_tools" and allowed is not None and isinstance(item.get("tools"), list):
        kept = [t for t in item["tools"] if isinstance(t, dict) and t.get("name") in allowed]
        if len(kept) != len(item["tools"]):
            item["tools"] = kept
            return True
    elif kind == "mcp_call" and final:
        call_id = item.get("id")
        if any(c["id"] == call_id for c in state.mcp_calls):
            return False
        name = item.get("name")
        state.mcp_calls.append({
            "id": call_id, "server_label": label, "route": route, "name": name,
            "status": item.get("status") or ("failed" if item.get("error") else "completed"),
            "error": bool(item.get("error")),
            # the provider was told which tools are allowed; a call outside them is the provider's doing
            "decision": "allow" if allowed is None or name in allowed else "outside_allowed_tools"})
        for observe in CALL_OBSERVERS:
            observe(state, state.mcp_calls[-1])
    return False


def filter_output(state: LlmState, response: Any, final: bool = True) -> bool:
    output = response.get("output") if isinstance(response, dict) else None
    if not isinstance(output, list):
        return False
    changed = False
    for item in output:
        changed |= filter_item(state, item, final)
    return changed
