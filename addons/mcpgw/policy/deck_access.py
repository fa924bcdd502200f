"""key-auth, acl, cors and ai-mcp-proxy in passthrough-listener mode on a decK route, service or
globally -> the route's `key_auth`, `access`, `cors` and `acl` (+ `audit.log_payloads`) settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .deck_proxy import proxy_config
from .deck_registry import DEFAULT_BODY_LIMIT, Plugin, RouteBuild, as_bool, as_int, take_options

if TYPE_CHECKING:
    from .deck import Translator


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


# ai-mcp-proxy's translator is deck_conversion.translate, which hands passthrough-listener to _mcp_proxy.
HANDLERS = {"cors": _cors, "key-auth": _key_auth, "acl": _acl}
