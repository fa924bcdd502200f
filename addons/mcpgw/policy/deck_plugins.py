"""Kong plugins of a decK file, as settings of native routes (see `deck` and docs/kong.md).

    key-auth                      -> key_auth
    ai-mcp-proxy                  -> acl (+ audit.log_payloads)
    ai-mcp-oauth2                 -> oauth (its PRM is served by the gateway)
    cors                          -> cors
    request-transformer(-advanced) -> credentials (mode: inject) or request_transform (deck_transformers)
    response-transformer-advanced -> prm rewrite of the route whose well-known path it serves
    datakit (the PRM challenge)   -> prm.challenge

Options are read with Kong's names and defaults; an option that would change behaviour and has
no native equivalent is refused, one that changes nothing here is accepted (`INERT`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml

if TYPE_CHECKING:
    from .deck import Translator

Loc = tuple[str | int, ...]
WELL_KNOWN = "/.well-known/oauth-protected-resource"
DEFAULT_BODY_LIMIT = 1024 * 1024  # Kong's max_request_body_size default, and the gateway's max_body_size
PLUGIN_FIELDS = ("name", "config", "instance_name", "tags", "enabled", "ordering", "protocols", "id",
                 "service", "route", "consumer", "consumer_group")
# The gateway's fixed order of access-phase work, by the plugin that does it in Kong.
NATIVE_ORDER = ("cors", "datakit", "ai-mcp-oauth2", "openid-connect", "key-auth", "request-validator", "acl", "ai-mcp-proxy", "rate-limiting",
                "rate-limiting-advanced", "ai-rate-limiting-advanced", "request-transformer-advanced",
                "request-transformer", "ai-proxy", "ai-proxy-advanced", "ai-prompt-guard")
RTA, RT, RESPONSE_TRANSFORMER = "request-transformer-advanced", "request-transformer", "response-transformer-advanced"
SUPPORTED = ("key-auth", "acl", "ai-mcp-proxy", "ai-mcp-oauth2", "openid-connect", "cors", RTA, RT, RESPONSE_TRANSFORMER, "datakit",
             "rate-limiting", "rate-limiting-advanced", "ai-proxy", "ai-proxy-advanced", "ai-rate-limiting-advanced", "ai-prompt-guard")
SUPPORTED_TEXT = ("key-auth, acl (with include_consumer_groups), ai-mcp-proxy, ai-mcp-oauth2, "
                  "openid-connect (bearer or introspection), cors, "
                  "request-transformer and request-transformer-advanced (headers and query string), "
                  "response-transformer-advanced (PRM rewrite), datakit (PRM challenge), "
                  "rate-limiting, rate-limiting-advanced and ai-rate-limiting-advanced (strategy local or redis), "
                  "ai-proxy and ai-proxy-advanced (round-robin or least-connections; docs/ai.md), ai-prompt-guard")
REFUSED: dict[str, str] = {}  # plugin -> why it is refused, instead of the generic message


def _equal(default: Any) -> Any:
    return lambda value: value == default or value in ([], {})


def _any(value: Any) -> bool:
    return True


# Options accepted although they have no native counterpart, when the value changes nothing here
# (each predicate says when). Kong's dumps spell every option out with its default.
INERT: dict[str, dict[str, Any]] = {
    "key-auth": {"identity_realms": lambda v: isinstance(v, list) and all(
        isinstance(r, dict) and r.get("scope", "cp") == "cp" for r in v)},  # Kong's own consumers only
    "ai-mcp-oauth2": {
        "keepalive": _any, "http_version": _any, "metadata_discovery_retry": _any,
        "tls_client_auth_ssl_verify": _any, "args": _equal({}), "headers": _equal({}),
    },
    "ai-mcp-proxy": {
        "server": _any,  # listener settings, unused in passthrough-listener mode
    },
    "cors": {"private_network": _equal(False), "allow_origin_absent": _equal(True)},
    RTA: {"dots_in_keys": _any},  # about body operations, which are refused
}
# What to say when an INERT option has a value that would change something.
INERT_SUPPORTED: dict[tuple[str, str], str] = {
    ("cors", "private_network"): "only false, Kong's default, is supported",
    ("cors", "allow_origin_absent"): "only true, Kong's default, is supported",
}


# -- problems, located in the file -----------------------------------------------------------------


def _format(loc: Iterable[str | int], dotted: bool = False) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out or dotted else str(part))
    return out


class Problems:
    """One message per problem, in file order; duplicates (a service-level plugin seen from each of
    its routes) are kept once."""

    def __init__(self, root: yaml.Node | None = None):
        self.root = root
        self._messages: dict[str, tuple[int, int]] = {}  # message -> (line, order of discovery)

    def _line(self, loc: Loc) -> int | None:
        node, line = self.root, None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
            else:
                node = None
            if node is None:
                break
            line = node.start_mark.line + 1
        return line

    def where(self, loc: Loc, name: str | None = None, name_at: int | None = None) -> str:
        """`services[0].routes[0].plugins[2] (name: cors).config.origins (line 57)`"""
        cut = len(loc) if name_at is None else name_at
        text = _format(loc[:cut]) or "(top level)"
        if name:
            text += f" (name: {name})"
        text += _format(loc[cut:], dotted=True)
        number = self._line(loc)
        return text + (f" (line {number})" if number else "")

    def add(self, loc: Loc, message: str, *, name: str | None = None, name_at: int | None = None) -> None:
        self._messages.setdefault(f"{self.where(loc, name, name_at)}: {message}",
                                  (self._line(loc) or 0, len(self._messages)))

    def messages(self) -> list[str]:
        return sorted(self._messages, key=self._messages.__getitem__)

    def __bool__(self) -> bool:
        return bool(self._messages)


def known_fields(obj: dict[str, Any], loc: Loc, supported: Iterable[str], what: str, problems: Problems,
                 hints: dict[str, str] | None = None) -> None:
    supported = tuple(supported)
    for key in obj:
        if key not in supported:
            hint = (hints or {}).get(key) or f"supported {what} fields: {', '.join(supported)}"
            problems.add((*loc, key), f"{what} field {key!r} is not supported ({hint})")


def as_bool(value: Any, loc: Loc, problems: Problems) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    problems.add(loc, f"expected true or false, got {value!r}")
    return False


def as_int(value: Any, loc: Loc, problems: Problems) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    problems.add(loc, f"expected a whole number, got {value!r}")
    return 0


@dataclass(frozen=True)
class Origin:
    """Where a native setting comes from in the decK file (for errors found by native validation)."""

    loc: Loc
    name: str | None = None  # the plugin's name, shown after its entry
    name_at: int | None = None


# -- plugins -------------------------------------------------------------------------------------


@dataclass
class Plugin:
    name: str
    config: dict[str, Any]
    loc: Loc
    scope: dict[str, str]
    ordering: Any = None
    index: int = 0

    @property
    def rank(self) -> int:
        """Kong's precedence among instances that apply: route over service over global."""
        return 2 if "route" in self.scope else 1 if "service" in self.scope else 0

    def where(self, problems: Problems, *sub: str | int) -> str:
        return problems.where((*self.loc, *sub), self.name, len(self.loc))

    def problem(self, problems: Problems, message: str, *sub: str | int) -> None:
        problems.add((*self.loc, *sub), message, name=self.name, name_at=len(self.loc))


def _scope_name(value: Any) -> Any:
    return value.get("name") or value.get("id") if isinstance(value, dict) else value


def read_plugin(entry: dict[str, Any], loc: Loc, scope: dict[str, str], problems: Problems) -> Plugin | None:
    """A plugin entry, or None when it is disabled (Kong does not run it) or refused."""
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        problems.add(loc, "a plugin needs a name")
        return None
    known_fields(entry, loc, PLUGIN_FIELDS, "plugin", problems)
    if not as_bool(entry.get("enabled", True), (*loc, "enabled"), problems):
        return None
    scope = dict(scope)
    for key in ("service", "route", "consumer", "consumer_group"):
        if entry.get(key) is None:
            continue
        value = _scope_name(entry[key])
        if not isinstance(value, str) or (key in scope and scope[key] != value):
            problems.add((*loc, key), f"{key} {value!r} contradicts where the plugin is declared", name=name,
                         name_at=len(loc))
            return None
        scope[key] = value
    protocols = entry.get("protocols")
    if protocols is not None and not {"http", "https"} <= set(protocols if isinstance(protocols, list) else []):
        problems.add((*loc, "protocols"), "a plugin limited to some protocols is not supported: the gateway applies "
                     "every plugin to http and https requests alike", name=name, name_at=len(loc))
        return None
    if name in REFUSED or name not in SUPPORTED:
        problems.add(loc, REFUSED.get(name) or f"plugin {name!r} is not supported; supported plugins: {SUPPORTED_TEXT}",
                     name=name)
        return None
    config = entry.get("config") or {}
    if not isinstance(config, dict):
        problems.add((*loc, "config"), "expected a mapping", name=name, name_at=len(loc))
        return None
    return Plugin(name, config, loc, scope, entry.get("ordering"))


def take_options(plugin: Plugin, supported: Iterable[str], problems: Problems) -> dict[str, Any]:
    """The plugin's options that map to native ones; Kong's `null` means unset. Others are refused
    unless they change nothing here."""
    supported, inert = tuple(supported), INERT.get(plugin.name, {})
    taken = {}
    for key, value in plugin.config.items():
        if value is None:
            continue
        if key in supported:
            taken[key] = value
        elif key in inert and (plugin.name, key) in INERT_SUPPORTED and not inert[key](value):
            shown = json.dumps(value) if isinstance(value, (str, bool, int, float)) else "this value"  # no secret shown
            plugin.problem(problems, f"{shown} is not supported ({INERT_SUPPORTED[plugin.name, key]})", "config", key)
        elif key not in inert or not inert[key](value):
            plugin.problem(problems, f"option not supported by this gateway (supported: {', '.join(supported)})",
                           "config", key)
    return taken


def check_ordering(plugin: Plugin, problems: Problems) -> None:
    """`ordering` is accepted when it asks for what the gateway's fixed order already does."""
    ordering = plugin.ordering
    if ordering is None:
        return
    if not isinstance(ordering, dict) or not set(ordering) <= {"before", "after"}:
        plugin.problem(problems, "expected before: and/or after:", "ordering")
        return
    mine = NATIVE_ORDER.index(plugin.name) if plugin.name in NATIVE_ORDER else None
    for direction, phases in ordering.items():
        if not isinstance(phases, dict) or not set(phases) <= {"access"}:
            plugin.problem(problems, "only the access phase can be ordered (as in Kong)", "ordering", direction)
            continue
        for other in phases.get("access") or []:
            if other not in NATIVE_ORDER or mine is None:
                continue
            theirs = NATIVE_ORDER.index(other)
            if (mine > theirs) if direction == "before" else (mine < theirs):
                plugin.problem(problems, f"{plugin.name} cannot run {direction} {other}: the gateway's order is "
                               f"fixed ({', '.join(NATIVE_ORDER)})", "ordering", direction, "access")


# -- routes under construction --------------------------------------------------------------------


@dataclass
class RouteBuild:
    name: str
    service: str
    loc: Loc
    native: dict[str, Any]
    plugins: dict[str, Plugin]  # by name: the instance Kong would run on this route
    personal: list[Plugin]  # consumer or consumer-group scoped instances that apply here
    service_url: str | None
    folded: bool = False  # a PRM route, folded into the route it describes
    public_urls: list[str] = field(default_factory=list)  # the gateway's own URLs named by plugins
    challenge: Plugin | None = None
    rewrite: tuple[Plugin, str, str] | None = None  # (plugin, upstream PRM URL, resource)
    body_limits: list[int] = field(default_factory=list)

    def origin(self, t: "Translator", section: str, plugin: Plugin, *more: str | int) -> None:
        t.origins[("routes", self.name, section, *more)] = Origin((*plugin.loc, "config"), plugin.name, len(plugin.loc))


def apply_plugins(builds: dict[str, RouteBuild], t: "Translator") -> None:
    from . import deck_oauth, deck_transformers  # they build on this module's plugins and routes

    from . import deck_ai, deck_conversion, deck_limits

    for plugin in t.plugins:
        check_ordering(plugin, t.problems)
    for build in builds.values():
        if RESPONSE_TRANSFORMER in build.plugins:
            _fold_prm_route(build, builds, t)
    handlers = {"cors": _cors, "datakit": _datakit, "ai-mcp-oauth2": deck_oauth.translate,
                "openid-connect": deck_oauth.translate_oidc, "key-auth": _key_auth,
                "acl": _acl, "ai-mcp-proxy": _mcp_proxy, **deck_limits.HANDLERS, **deck_ai.HANDLERS}
    handlers.update(LOGGING_HANDLERS, **deck_conversion.HANDLERS, **VALIDATOR_HANDLERS)  # logging; conversion modes; request-validator
    for build in builds.values():
        if build.folded:
            continue
        for plugin in build.personal:
            if plugin.name != RTA and not (plugin.name in deck_ai.PERSONAL and deck_ai.HANDLERS.keys() & build.plugins) \
                    and plugin.name not in deck_limits.PERSONAL:
                plugin.problem(t.problems, "plugins scoped to a consumer or consumer group are supported for "
                               "request-transformer-advanced only (as credentials overrides)")
        for name in NATIVE_ORDER:
            if name in build.plugins and name in handlers:
                handlers[name](build.plugins[name], build, t)
        deck_limits.personal_only(build, t)  # consumer(-group) rate limits with no route-level instance
        deck_transformers.translate_transformers(build, t)
        _discovery(build, t)
        if build.body_limits:
            acl = build.native.setdefault("acl", {})
            acl["max_request_body_size"] = min(build.body_limits)
        if not build.native["paths"]:
            t.problems.add((*build.loc, "paths"), "no path is left once the PRM location is served by the gateway")


def _cors(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    build.native["cors"] = take_options(plugin, ("origins", "methods", "headers", "exposed_headers", "credentials",
                                                 "max_age", "preflight_continue"), t.problems)
    build.origin(t, "cors", plugin)


def _acl(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    """Kong's acl matches ACL groups (consumers' `acls` credentials), and consumer groups too with
    include_consumer_groups (Kong's default: false)."""
    access = take_options(plugin, ("allow", "deny", "hide_groups_header", "include_consumer_groups",
                                   "always_use_authenticated_groups"), t.problems)
    access["include_consumer_groups"] = access.get("include_consumer_groups") is True
    build.native["access"] = access
    build.origin(t, "access", plugin)


# What Kong's key-auth always sets upstream (its handler's set_consumer); X-Consumer-Groups comes
# from the acl plugin (route `access`), as in Kong.
KEY_AUTH_HEADERS = ["X-Consumer-ID", "X-Consumer-Custom-ID", "X-Consumer-Username", "X-Credential-Identifier",
                    "X-Anonymous-Consumer"]


def _key_auth(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    build.native["key_auth"] = take_options(plugin, ("key_names", "hide_credentials", "anonymous", "key_in_header",
                                                     "key_in_query", "key_in_body", "run_on_preflight", "realm"),
                                            t.problems)
    build.origin(t, "key_auth", plugin)
    build.native["upstream_identity_headers"] = list(KEY_AUTH_HEADERS)


TOOL_FIELDS = ("name", "description", "acl", "annotations")
CONVERSION_FIELDS = ("method", "path", "host", "scheme", "headers", "query", "parameters", "request_body", "responses")


def _mcp_proxy(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    problems = t.problems
    config = take_options(plugin, ("mode", "default_acl", "tools", "prompts", "resources", "consumer_identifier",
                                   "include_consumer_groups", "logging", "max_request_body_size",
                                   "acl_attribute_type", "access_token_claim_field", "proxy_config"), problems)
    if config.pop("proxy_config", None) is not None:  # the route's upstream_proxy (policy/deck_proxy.py)
        from .deck_proxy import proxy_config
        proxy_config(plugin, build, t)
    if config.get("acl_attribute_type") == "consumer":  # Kong's default, spelt out by dumps
        del config["acl_attribute_type"]
    if config.pop("mode", None) != "passthrough-listener":
        plugin.problem(problems, f"mode {plugin.config.get('mode')!r} is not supported; supported: "
                       "passthrough-listener (the gateway fronts an MCP server; it does not turn REST APIs into MCP "
                       "tools)", "config", "mode")
        return
    if isinstance(config.get("tools"), list):
        tools = []
        for i, tool in enumerate(config["tools"]):
            if isinstance(tool, dict):
                for key in tool.keys() & set(CONVERSION_FIELDS):
                    plugin.problem(problems, "only used by the conversion modes; in passthrough-listener mode a tool "
                                   "entry is name, description and acl", "config", "tools", i, key)
                tool = {k: v for k, v in tool.items() if k not in ("annotations", *CONVERSION_FIELDS)}
            tools.append(tool)
        config["tools"] = tools
    logging = config.pop("logging", None) or {}
    if not isinstance(logging, dict):
        plugin.problem(problems, "expected a mapping", "config", "logging")
        logging = {}
    for key, value in logging.items():
        if key not in ("log_payloads", "log_statistics", "log_audits"):
            plugin.problem(problems, "not supported (supported: log_payloads, log_statistics, log_audits)",
                           "config", "logging", key)
    if as_bool(logging.get("log_payloads") or False, (*plugin.loc, "config", "logging", "log_payloads"), problems):
        build.native["audit"] = {"log_payloads": True}
        build.origin(t, "audit", plugin)
    if "max_request_body_size" in config:
        limit = as_int(config.pop("max_request_body_size"), (*plugin.loc, "config", "max_request_body_size"), problems)
        if limit and limit != DEFAULT_BODY_LIMIT:
            build.body_limits.append(limit)
    if config:
        if t.settings.deny_response != "jsonrpc":  # the native default; Kong 3.14+ answers HTTP 403
            config["deny_response"] = t.settings.deny_response
        config["refuse_without_tools"] = True  # Kong: a consumer no tool is allowed to cannot connect
        build.native["acl"] = config
        build.origin(t, "acl", plugin)


# -- OAuth discovery: datakit challenge, response-transformer-advanced PRM rewrite ------------------


def _fold_prm_route(build: RouteBuild, builds: dict[str, RouteBuild], t: "Translator") -> None:
    """A route serving /.well-known/oauth-protected-resource<path> of another route, proxying the
    upstream's PRM with `resource` replaced: natively, that other route's `prm` rewrite."""
    plugin, problems = build.plugins[RESPONSE_TRANSFORMER], t.problems
    resource = _prm_resource(plugin, problems)
    targets = []
    for path in build.native["paths"]:
        described = path[len(WELL_KNOWN):] if path.startswith(WELL_KNOWN + "/") else None
        target = next((b for b in builds.values() if described is not None and b is not build
                       and RESPONSE_TRANSFORMER not in b.plugins and described in b.native["paths"]), None)
        if target is None:
            plugin.problem(problems, f"response-transformer-advanced is supported only as the PRM rewrite, on a route "
                           f"whose paths are {WELL_KNOWN}<path of another route>; path {path!r} is not (an MCP "
                           "route's answers are the JSON-RPC results the gateway filters and streams as they come)")
            return
        targets.append((target, path))
    for name, other in [*build.plugins.items(), *((p.name, p) for p in build.personal)]:
        if name != RESPONSE_TRANSFORMER:
            other.problem(problems, "not supported on a PRM route: the gateway serves protected resource metadata "
                          "to everyone, without running plugins (discovery precedes authentication)")
    methods = build.native.get("methods")
    if methods is not None and "GET" not in methods:
        problems.add((*build.loc, "methods"), "a PRM route must accept GET")
    if resource is None or build.service_url is None:
        return
    build.folded = True
    for target, path in targets:
        if target.rewrite is not None:
            plugin.problem(problems, f"route {target.name!r} already has its PRM rewritten by "
                           f"{target.rewrite[0].where(problems)}")
            continue
        upstream = build.service_url.rstrip("/") + ("" if build.native.get("strip_path", True) else path)
        target.rewrite = (plugin, upstream, resource)
        target.public_urls.append(resource)


def _empty(value: Any) -> bool:
    """Kong's spelled-out defaults of a transformer: nothing, or sections of empty lists."""
    return value in (None, [], {}) or (isinstance(value, dict) and all(_empty(v) for v in value.values()))


def _prm_resource(plugin: Plugin, problems: Problems) -> str | None:
    """The resource of `replace.json: ["resource:<url>"]`, the one transformation supported."""
    resource, unsupported = None, []
    for op, section in plugin.config.items():
        if _empty(section) or op == "dots_in_keys":
            continue
        if op != "replace" or not isinstance(section, dict):
            unsupported.append(("config", op))
            continue
        for key, value in section.items():
            if _empty(value):
                continue
            if key == "json" and isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
                name, _, text = value[0].partition(":")
                if name.strip() == "resource" and urlsplit(text.strip()).scheme in ("http", "https"):
                    resource = text.strip()
                    continue
            if key == "json_types" and value == ["string"]:
                continue
            unsupported.append(("config", op, key))
    for sub in unsupported:
        plugin.problem(problems, "only replace.json: ['resource:<absolute URL>'] (the PRM rewrite) is supported", *sub)
    if resource is None and not unsupported:
        plugin.problem(problems, "expected replace.json: ['resource:<absolute URL>'] (the PRM rewrite)", "config")
    return None if unsupported else resource


_JQ_TERM = re.compile(r'\.(?P<input>[A-Za-z_][\w-]*)?(?:\.(?P<name>[A-Za-z_][\w-]*)|\["(?P<quoted>[^"]+)"\])\??'
                      r'\s*!=\s*null')
_AUTH_PARAM = re.compile(r'\s*([A-Za-z_]+)\s*=\s*"([^"]*)"\s*')
JSON = "application/json"


def _datakit(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    url = _challenge_url(plugin, t.problems)
    if url is None:
        return
    locations = {WELL_KNOWN + p.rstrip("/") for p in build.native["paths"] if not p.startswith(WELL_KNOWN + "/")}
    if urlsplit(url).path not in locations:
        plugin.problem(t.problems, f"the challenge points at {url}, but the gateway serves this route's PRM at "
                       f"{', '.join(sorted(locations))}", "config", "nodes")
        return
    build.challenge = plugin
    build.public_urls.append(url)


def _challenge_url(plugin: Plugin, problems: Problems) -> str | None:
    """Recognise the one datakit graph supported, by node types and wiring (not names): a jq node
    testing request headers for Authorization, a branch on it whose else runs a static node and
    an exit 401 answering with the static node's values as headers and one of them as body.
    Returns the challenge's resource_metadata URL, or None (with a problem)."""
    found = _challenge_graph(plugin.config)
    if isinstance(found, tuple):
        return found[0]
    where = () if found.startswith("only nodes") else ("nodes",)
    plugin.problem(problems, f"{found}; the only datakit graph supported is the PRM challenge (jq: Authorization "
                   "header present?, branch, else: static headers and body + exit 401)", "config", *where)
    return None


def _challenge_graph(config: dict[str, Any]) -> tuple[str] | str:
    """(resource_metadata URL,) of the challenge graph, or why `config` is not that graph."""
    if set(config) - {"nodes", "debug"} or config.get("debug"):
        return "only nodes (and debug: false) are supported"
    nodes = config.get("nodes")
    if not isinstance(nodes, list) or not all(isinstance(n, dict) and isinstance(n.get("name"), str) for n in nodes):
        return "expected a list of named nodes"
    types = sorted(str(n.get("type")) for n in nodes)
    if types != ["branch", "exit", "jq", "static"]:
        return f"node types {types}"
    jq, branch, static, exit_ = (next(n for n in nodes if n.get("type") == t) for t in ("jq", "branch", "static", "exit"))

    inputs = jq.get("inputs")
    if (set(jq) - {"name", "type", "inputs", "jq"} or not isinstance(inputs, dict) or len(inputs) != 1
            or list(inputs.values()) != ["request.headers"] or not _tests_authorization(str(jq.get("jq")), *inputs)):
        return "the jq node must read request.headers and test only that an Authorization header is present"
    if (set(branch) - {"name", "type", "input", "then", "else"} or branch.get("input") != jq["name"]
            or branch.get("then") or sorted(branch.get("else") or []) != sorted([static["name"], exit_["name"]])):
        return "the branch must take the jq node's result and, in else, run the static and exit nodes"

    values, wiring = static.get("values"), exit_.get("inputs") or {}
    body_key = str(wiring.get("body", "")).removeprefix(static["name"] + ".")
    if (set(exit_) - {"name", "type", "status", "inputs", "warn_headers_sent"} or set(wiring) != {"body", "headers"}
            or wiring["headers"] != static["name"] or not isinstance(values, dict) or body_key == wiring["body"]
            or body_key not in values):
        return "the exit node must answer with the static node's values as headers and one of them as body"
    if str(exit_.get("status")) != "401":
        return f"the exit status is {exit_.get('status')!r}, not 401"

    headers = {str(k).lower(): str(v) for k, v in values.items() if k != body_key}
    if set(headers) - {"www-authenticate", "content-type"} or headers.get("content-type", JSON) != JSON:
        return (f"static headers {sorted(headers)}: the gateway's challenge sends WWW-Authenticate and "
                "Content-Type: application/json only")
    try:
        body = json.loads(str(values[body_key]))
    except ValueError:
        body = None
    if body != {"message": "Unauthorized"}:
        return ('the body must be {"message": "Unauthorized"}, the recipe\'s (the gateway answers with its own '
                'challenge body, which says what is missing)')
    scheme, _, text = headers.get("www-authenticate", "").strip().partition(" ")
    params = [_AUTH_PARAM.fullmatch(p) for p in text.split(",")]
    found = dict(m.groups() for m in params if m)
    url = found.get("resource_metadata", "")
    if (scheme.lower() != "bearer" or not all(params) or not set(found) <= {"resource_metadata", "error"}
            or found.get("error", "invalid_token") != "invalid_token" or urlsplit(url).scheme not in ("http", "https")):
        return 'WWW-Authenticate must be Bearer resource_metadata="<URL>", error="invalid_token"'
    return (url,)


def _tests_authorization(expression: str, input_name: str) -> bool:
    """`.headers.Authorization? != null or .headers.authorization? != null`, and its variants."""
    terms = re.split(r"\s+or\s+", expression.strip())
    for term in terms:
        m = _JQ_TERM.fullmatch(term.strip().strip("()").strip())
        if m is None or m["input"] != input_name or (m["name"] or m["quoted"]).lower() != "authorization":
            return False
    return True


def _discovery(build: RouteBuild, t: "Translator") -> None:
    prm: dict[str, Any] = {}
    if build.challenge is not None:
        prm["challenge"] = True
        build.origin(t, "prm", build.challenge)
    if build.rewrite is not None:
        plugin, upstream, resource = build.rewrite
        if "oauth" in build.native:
            plugin.problem(t.problems, f"route {build.name!r} serves its own PRM (ai-mcp-oauth2); it cannot also "
                           "rewrite the upstream's")
            return
        prm.update(mode="rewrite", upstream_url=upstream, resource=resource)
        build.origin(t, "prm", plugin)
    elif prm and "oauth" in build.native:
        prm["mode"] = "serve"
    if prm:
        build.native["prm"] = prm


# -- Kong vault references ------------------------------------------------------------------------

_TRANSFORMED_VALUE = lambda sub: len(sub) == 3 and sub[0] in ("add", "append", "replace") and sub[1] in (  # noqa: E731
    "headers", "querystring")
SECRET_OPTIONS = {"ai-mcp-oauth2": lambda sub: sub in (("client_secret",), ("token_exchange", "client_secret"),
                                                      ("token_exchange", "request", "actor_token")),
                  "openid-connect": lambda sub: sub in (("client_secret",), ("client_secret", 0)), RTA: _TRANSFORMED_VALUE,
                  RT: _TRANSFORMED_VALUE}
SECRET_OPTIONS.update(dict.fromkeys(("rate-limiting", "rate-limiting-advanced", "ai-rate-limiting-advanced"), lambda sub: sub in (  # Redis login
    ("redis", "password"), ("redis", "username"), ("redis_password",), ("redis_username",))))
SECRET_OPTIONS.update({"ai-proxy": lambda sub: sub in (("auth", "header_value"), ("auth", "param_value")),  # provider keys
                       "ai-proxy-advanced": lambda sub: len(sub) == 4 and sub[0] == "targets" and sub[2:] in (
                           ("auth", "header_value"), ("auth", "param_value"))})


def check_vault_references(tree: Any, problems: Problems, loc: Loc = (), plugin: tuple[str, int] | None = None) -> None:
    """`{vault://...}` is resolved where the native model takes a secret (consumer keys,
    ai-mcp-oauth2 client_secret, request-transformer-advanced values); anywhere else it would be
    used as literal text, so it is refused."""
    if isinstance(tree, dict):
        if len(loc) >= 2 and loc[-2] == "plugins" and isinstance(tree.get("name"), str):
            if tree.get("enabled") is False:
                return
            plugin = (tree["name"], len(loc))
        for key, value in tree.items():
            check_vault_references(value, problems, (*loc, key), plugin)
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            check_vault_references(value, problems, (*loc, i), plugin)
    elif isinstance(tree, str) and "{vault://" in tree:
        if loc[-3:-2] == ("keyauth_credentials",) and loc[-1] == "key":
            return
        if plugin is not None and loc[plugin[1]:plugin[1] + 1] == ("config",):
            allowed = SECRET_OPTIONS.get(plugin[0])
            if allowed is not None and allowed(loc[plugin[1] + 1:]):
                return
        problems.add(loc, "a Kong vault reference is resolved only in consumer keys, ai-mcp-oauth2 client_secret "
                     "and request-transformer(-advanced) values; here it would be used as literal text")


# Kong's logging plugins (deck_logging.py): they only report traffic, so they come after every other.
from .deck_logging import HANDLERS as LOGGING_HANDLERS, SUPPORTED_TEXT as _LOGGING_TEXT  # noqa: E402 (it imports this module)

NATIVE_ORDER += tuple(LOGGING_HANDLERS)
SUPPORTED += tuple(LOGGING_HANDLERS)
from .deck_validator import HANDLERS as VALIDATOR_HANDLERS  # noqa: E402 (request-validator, docs/kong.md)
SUPPORTED += tuple(VALIDATOR_HANDLERS)
SUPPORTED_TEXT += ", request-validator (docs/kong.md)"
SUPPORTED_TEXT += ", " + _LOGGING_TEXT
SECRET_OPTIONS["http-log"] = lambda sub: len(sub) == 2 and sub[0] == "headers"  # a log endpoint's credential
