"""Kong's ai-mcp-proxy conversion modes in a decK file, as native `rest_tools` (docs/rest-tools.md).

    conversion-listener  -> rest_tools (mode conversion-listener) + acl of its tools
    conversion-only      -> rest_tools (mode conversion-only, tags: the plugin's tags)
    listener             -> rest_tools (mode listener, server.tag) + acl gathered from the tools it
                            serves: each tool's own acl, else its plugin's default_acl (Kong: a
                            listener has no ACL of its own, it inherits the tagged plugins')

Kong's units and names: server.timeout in milliseconds, tools[].annotations in snake_case.
tools[].host and tools[].scheme name how Kong's router would match the route internally; here
the call goes to the route's service directly, so they change nothing. A serviceless route is
accepted when a listener runs on it (it never forwards): it gets a placeholder service
(LISTENER_SERVICE_URL) that nothing is sent to. passthrough-listener stays deck_plugins'."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .deck_access import _mcp_proxy
from .deck_proxy import proxy_config
from .deck_registry import DEFAULT_BODY_LIMIT, Plugin, RouteBuild, Service, as_bool, as_int, take_options

if TYPE_CHECKING:
    from .deck import Translator

CONVERSION = ("conversion-listener", "conversion-only")
LISTENER_SERVICE_URL = "http://127.0.0.1:9"  # never called: a listener answers every request itself
TOOL_OPTIONS = ("name", "description", "method", "path", "parameters", "request_body", "headers", "query",
                "annotations", "acl", "host", "scheme")
SERVER_OPTIONS = ("tag", "timeout", "forward_client_headers", "session")
ACL_OPTIONS = ("consumer_identifier", "include_consumer_groups", "acl_attribute_type", "access_token_claim_field")
OPTIONS = ("mode", "tools", "server", "default_acl", "logging", "max_request_body_size", "tools_cache_ttl_seconds",
           "proxy_config", *ACL_OPTIONS)


# -- reading the file before routes are built --------------------------------------------------------


def _plugin_entries(data: dict[str, Any]):
    """(loc, entry, route name or None) of every plugin entry of the file."""
    def entries(owner: Any, loc: tuple, route: str | None):
        plugins = owner.get("plugins") if isinstance(owner, dict) else None
        for i, entry in enumerate(plugins if isinstance(plugins, list) else []):
            if isinstance(entry, dict):
                ref = entry.get("route")
                yield (*loc, "plugins", i), entry, route or (ref.get("name") if isinstance(ref, dict) else ref)

    yield from entries(data, (), None)
    for i, service in enumerate(data.get("services") or []):
        yield from entries(service, ("services", i), None)
        for j, route in enumerate((service.get("routes") if isinstance(service, dict) else None) or []):
            yield from entries(route, ("services", i, "routes", j), route.get("name") if isinstance(route, dict) else None)
    for i, route in enumerate(data.get("routes") or []):
        yield from entries(route, ("routes", i), route.get("name") if isinstance(route, dict) else None)


def scan(data: dict[str, Any]) -> tuple[dict[tuple, list[str]], set[str]]:
    """(the tags of every ai-mcp-proxy entry by location, the routes a listener runs on)."""
    tags: dict[tuple, list[str]] = {}
    listeners: set[str] = set()
    for loc, entry, route in _plugin_entries(data):
        if entry.get("name") != "ai-mcp-proxy":
            continue
        tags[loc] = [t for t in entry.get("tags") or [] if isinstance(t, str)]
        config = entry.get("config")
        if isinstance(config, dict) and config.get("mode") == "listener" and isinstance(route, str):
            listeners.add(route)
    return tags, listeners


def listener_service(t: "Translator", route: str, loc: tuple) -> str:
    """The placeholder service of a serviceless listener route."""
    name = f"{route}-listener"
    t.services.setdefault(name, Service(name, loc, LISTENER_SERVICE_URL))
    return name


# -- translation ------------------------------------------------------------------------------------


def _tool_name(tool: dict[str, Any], route: str, index: int) -> str:
    annotations = tool.get("annotations") if isinstance(tool.get("annotations"), dict) else {}
    return tool.get("name") or annotations.get("title") or f"{route}-{index + 1}"  # Kong's rule


def _tools(plugin: Plugin, route: str, t: "Translator") -> list[tuple[dict[str, Any], Any]]:
    """(native tool, its own acl or None) of a conversion plugin."""
    out = []
    tools = plugin.config.get("tools")
    if not isinstance(tools, list):
        plugin.problem(t.problems, "expected a list of tools", "config", "tools")
        return out
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            plugin.problem(t.problems, "expected a mapping", "config", "tools", i)
            continue
        native: dict[str, Any] = {}
        for key, value in tool.items():
            if value is None or key in ("acl", "host", "scheme"):
                continue
            if key not in TOOL_OPTIONS:
                hint = " (responses: the result is not validated against it here)" if key == "responses" else ""
                plugin.problem(t.problems, f"not supported{hint}; supported: {', '.join(TOOL_OPTIONS)}",
                               "config", "tools", i, key)
                continue
            native[key] = _secret_lists(value, t) if key in ("headers", "query") else value
        native["name"] = _tool_name(tool, route, i)
        out.append((native, tool.get("acl")))
    return out


def _secret_lists(value: Any, t: "Translator") -> Any:
    """Fixed header and query values (API keys among them) as the converter writes secrets."""
    if not isinstance(value, dict):
        return value
    return {k: [t.secret(v) for v in vs] if isinstance(vs, list) else t.secret(vs) for k, vs in value.items()}


def _server(plugin: Plugin, t: "Translator") -> dict[str, Any]:
    server = plugin.config.get("server") or {}
    if not isinstance(server, dict):
        plugin.problem(t.problems, "expected a mapping", "config", "server")
        return {}
    native: dict[str, Any] = {}
    for key, value in server.items():
        loc = (*plugin.loc, "config", "server", key)
        if value is None:
            continue
        if key not in SERVER_OPTIONS:
            plugin.problem(t.problems, f"not supported; supported: {', '.join(SERVER_OPTIONS)}", "config", "server", key)
        elif key == "timeout":
            native["timeout"] = as_int(value, loc, t.problems) / 1000  # Kong: milliseconds
        elif key == "forward_client_headers":
            native[key] = as_bool(value, loc, t.problems)
        elif key == "tag":
            native[key] = value
        elif isinstance(value, dict) and set(value) - {"managed"} == set() and value.get("managed", True) is True:
            pass  # managed sessions: the gateway's own session bindings (gateway.sessions, gateway.state)
        else:
            plugin.problem(t.problems, "only managed: true is supported: sessions are the gateway's session bindings "
                           "(gateway.sessions.idle_ttl; shared through gateway.state)", "config", "server", key)
    return native


def _common(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    """Options every mode shares: logging, the body limit, the tool cache."""
    logging = plugin.config.get("logging") or {}
    if isinstance(logging, dict) and logging.get("log_payloads") is True:
        build.native["audit"] = {"log_payloads": True}
        build.origin(t, "audit", plugin)
    if plugin.config.get("max_request_body_size") is not None:
        limit = as_int(plugin.config["max_request_body_size"], (*plugin.loc, "config", "max_request_body_size"),
                       t.problems)
        if limit and limit != DEFAULT_BODY_LIMIT:
            build.body_limits.append(limit)
    ttl = plugin.config.get("tools_cache_ttl_seconds")
    if ttl is not None:  # tools come from this file, not from a server: nothing is cached
        as_int(ttl, (*plugin.loc, "config", "tools_cache_ttl_seconds"), t.problems)


def _acl(plugin: Plugin, tools: list[tuple[str, Any]], t: "Translator", default: Any = None) -> dict[str, Any] | None:
    """The native acl of the tools a route serves: each tool's own lists, else `default` (its
    plugin's default_acl for tools), else open to everyone; anything else (a tool not served)
    denied. So a caller no served tool admits is refused outright, as Kong does."""
    if not default and not any(acl for _, acl in tools):
        return None
    acl: dict[str, Any] = {k: plugin.config[k] for k in ACL_OPTIONS if plugin.config.get(k) is not None}
    if acl.get("acl_attribute_type") == "consumer":
        del acl["acl_attribute_type"]
    acl["default_acl"] = [{"scope": "tools", "allow": []}]
    acl["tools"] = [{"name": name, "acl": lists or default or {}} for name, lists in tools]
    if t.settings.deny_response != "jsonrpc":
        acl["deny_response"] = t.settings.deny_response
    acl["refuse_without_tools"] = True  # Kong: a consumer no tool is allowed to cannot connect
    return acl


def _default_tools_acl(plugin: Plugin) -> dict[str, Any] | None:
    for entry in plugin.config.get("default_acl") or []:
        if isinstance(entry, dict) and entry.get("scope", "tools") == "tools":
            return {k: entry[k] for k in ("allow", "deny") if entry.get(k) is not None}
    return None


def _conversion(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    tools = _tools(plugin, build.name, t)
    native: dict[str, Any] = {"mode": plugin.config["mode"], "tools": [tool for tool, _ in tools]}
    tags = t.mcp_plugin_tags.get(plugin.loc) or []
    if tags:
        native["tags"] = tags
    if server := _server(plugin, t):
        native["server"] = server
    build.native["rest_tools"] = native
    proxy_config(plugin, build, t)
    build.origin(t, "rest_tools", plugin)
    _common(plugin, build, t)
    if plugin.config["mode"] == "conversion-listener":
        acl = _acl(plugin, [(tool["name"], lists) for tool, lists in tools], t, _default_tools_acl(plugin))
        if acl is not None:
            build.native["acl"] = acl
            build.origin(t, "acl", plugin)


def _listener(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    server = _server(plugin, t)
    for key in ("tools", "default_acl", "proxy_config"):
        if plugin.config.get(key):
            plugin.problem(t.problems, "a listener takes its tools, their ACLs and their proxy from the conversion "
                           "plugins tagged server.tag (as in Kong)", "config", key)
    build.native["rest_tools"] = {"mode": "listener", "server": server}
    build.origin(t, "rest_tools", plugin)
    _common(plugin, build, t)
    gathered: list[tuple[str, Any]] = []
    for other in t.plugins:
        if other.name != "ai-mcp-proxy" or other.config.get("mode") not in CONVERSION or "route" not in other.scope \
                or server.get("tag") not in (t.mcp_plugin_tags.get(other.loc) or []):
            continue  # Kong indexes tools of route-scoped plugins only
        default = _default_tools_acl(other)
        gathered += [(tool["name"], lists or default) for tool, lists in _tools(other, other.scope["route"], t)]
    acl = _acl(plugin, gathered, t)  # each tool's lists already hold its plugin's default
    if acl is not None:
        build.native["acl"] = acl
        build.origin(t, "acl", plugin)


def translate(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    mode = plugin.config.get("mode")
    if mode == "passthrough-listener":
        _mcp_proxy(plugin, build, t)
        return
    if mode not in (*CONVERSION, "listener"):
        why = ("; upstream-server aggregates the tools of MCP servers behind one endpoint (federation), which this "
               "gateway does not do, by decision (docs/rest-tools.md): give each MCP server its own "
               "passthrough-listener route") if mode == "upstream-server" else ""
        plugin.problem(t.problems, f"mode {mode!r} is not supported; supported: passthrough-listener (an MCP server "
                       "behind the gateway), conversion-listener, conversion-only and listener (REST operations as "
                       f"tools the gateway serves){why}", "config", "mode")
        return
    take_options(plugin, OPTIONS, t.problems)  # refuses what is not an option of these modes
    if mode == "listener":
        _listener(plugin, build, t)
    else:
        _conversion(plugin, build, t)


HANDLERS = {"ai-mcp-proxy": translate}
