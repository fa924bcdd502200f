"""Kong's ai-proxy and ai-proxy-advanced on a decK route, service or globally -> the route's
native `ai:` settings (docs/ai.md), and consumer- or consumer-group-scoped ai-proxy instances ->
its `ai.consumers` / `ai.consumer_groups` overrides (their model name and options: the route's
provider key stays the one sent).

As in Kong, the plugin decides where the request goes: the provider's base URL
(https://api.openai.com/v1 for provider openai, or `model.options.upstream_url` less the route
type's endpoint) becomes the route's service; the decK service's own URL is not used. Kong
passes MCP tools inside Responses requests through untouched, so a translated route allows MCP
servers that are none of the file's routes (`ai.mcp.allow_unknown_servers`); the native policy
can govern them.

ai-proxy-advanced: one target becomes the route's settings; several become `ai.targets` (each
its URL, auth, model and weight) under `ai.balancer`: algorithm round-robin, least-connections,
lowest-latency (`latency_strategy`), lowest-usage (`tokens_count_strategy`), consistent-hashing
(`hash_on_header`) or priority, `retries`, `connect_timeout` (ms -> s),
`failover_criteria` (error, timeout, http_403/404/429/500/502/503/504, non_idempotent; an answer
status is retried before any byte reached the client, ai/relay.py). Semantic routing and
invalid_header are refused; slots and the other timeouts change nothing here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, get_args

from ..ai.settings import ENDPOINTS, FailoverCriterion
from .deck_registry import Plugin, RouteBuild, Service, take_options

if TYPE_CHECKING:
    from .deck import Translator

AI_PROXY, AI_PROXY_ADVANCED = "ai-proxy", "ai-proxy-advanced"
PROVIDER_URLS = {"openai": "https://api.openai.com/v1"}
TARGET_FIELDS = ("route_type", "auth", "model", "logging", "weight", "description")
PROXY_FIELDS = ("route_type", "auth", "model", "logging", "model_name_header", "response_streaming",
                "max_request_body_size", "llm_format")
AUTH_FIELDS = ("header_name", "header_value", "param_name", "param_value", "param_location", "allow_override")
OPTION_FIELDS = ("max_tokens", "temperature", "top_p", "input_cost", "output_cost", "upstream_url")
ALGORITHMS = ("round-robin", "least-connections", "lowest-latency", "lowest-usage", "consistent-hashing", "priority")
CRITERIA = get_args(FailoverCriterion)
BALANCER_FIELDS = ("algorithm", "tokens_count_strategy", "latency_strategy", "retries", "connect_timeout",
                   "read_timeout", "write_timeout", "slots", "hash_on_header", "failover_criteria")


def _pick(plugin: Plugin, value: Any, fields: tuple[str, ...], t: "Translator", *sub: str | int) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        plugin.problem(t.problems, "expected a mapping", "config", *sub)
        return {}
    out = {}
    for key, v in value.items():
        if v is None:
            continue
        if key not in fields:
            plugin.problem(t.problems, f"option not supported by this gateway (supported: {', '.join(fields)})",
                           "config", *sub, key)
            continue
        out[key] = v
    return out


def _settings(plugin: Plugin, cfg: dict[str, Any], t: "Translator", *sub: str | int) -> tuple[dict[str, Any], str | None]:
    """A target (or ai-proxy's config) -> (native ai settings, provider base URL)."""
    route_type = cfg.get("route_type")
    if route_type not in ENDPOINTS:
        plugin.problem(t.problems, f"route_type {route_type!r} is not supported (supported: {', '.join(ENDPOINTS)})",
                       "config", *sub, "route_type")
        return {}, None
    native: dict[str, Any] = {"route_type": route_type, "mcp": {"allow_unknown_servers": True}}
    auth = _pick(plugin, cfg.get("auth"), AUTH_FIELDS, t, *sub, "auth")
    for key in ("header_value", "param_value"):
        if key in auth:
            auth[key] = t.secret(auth[key])
    if auth.get("param_location", "query") != "query":
        plugin.problem(t.problems, "only param_location query is supported", "config", *sub, "auth", "param_location")
    if auth:
        native["auth"] = auth
    model = _pick(plugin, cfg.get("model"), ("provider", "name", "options"), t, *sub, "model")
    provider = model.get("provider", "openai")
    options = _pick(plugin, model.get("options"), OPTION_FIELDS, t, *sub, "model", "options")
    upstream = options.pop("upstream_url", None)
    if upstream is not None:
        endpoint = ENDPOINTS[route_type]
        if not isinstance(upstream, str) or not upstream.rstrip("/").endswith(endpoint):
            plugin.problem(t.problems, f"upstream_url must end with {endpoint} (the {route_type} endpoint)",
                           "config", *sub, "model", "options", "upstream_url")
            return {}, None
        base = upstream.rstrip("/")[: -len(endpoint)]
    elif provider in PROVIDER_URLS:
        base = PROVIDER_URLS[provider]
    else:
        plugin.problem(t.problems, f"provider {provider!r} needs model.options.upstream_url (an OpenAI-compatible "
                       "endpoint); only openai has a known URL", "config", *sub, "model", "provider")
        return {}, None
    if provider != "openai" and upstream is None:
        return {}, None
    native["model"] = {"provider": "openai", **({"name": model["name"]} if model.get("name") else {}),
                       **({"options": options} if options else {})}
    logging = _pick(plugin, cfg.get("logging"), ("log_statistics", "log_payloads"), t, *sub, "logging")
    if logging:
        native["logging"] = logging
    return native, base


def _place(build: RouteBuild, t: "Translator", plugin: Plugin, native: dict[str, Any], base: str) -> None:
    name = f"{build.name}-llm"
    t.services[name] = Service(name, plugin.loc, base)
    build.service = build.native["service"] = name
    build.service_url = base
    build.native["ai"] = native
    build.origin(t, "ai", plugin)
    _personal(build, t, native)


def _personal(build: RouteBuild, t: "Translator", native: dict[str, Any]) -> None:
    for plugin in build.personal:
        if plugin.name != AI_PROXY:
            continue
        cfg = take_options(plugin, PROXY_FIELDS, t.problems)
        theirs, _ = _settings(plugin, cfg, t)
        if not theirs:
            continue
        if theirs["route_type"] != native["route_type"]:
            plugin.problem(t.problems, f"route_type differs from the route's ({native['route_type']})", "config", "route_type")
            continue
        override = {k: v for k, v in theirs["model"].items() if k in ("name", "options")}
        scope = plugin.scope
        key, who = ("consumers", scope["consumer"]) if "consumer" in scope else ("consumer_groups", scope["consumer_group"])
        native.setdefault(key, {})[who] = override


def ai_proxy(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    cfg = take_options(plugin, PROXY_FIELDS, t.problems)
    native, base = _settings(plugin, cfg, t)
    if native and base:
        _place(build, t, plugin, native, base)


def ai_proxy_advanced(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    cfg = take_options(plugin, ("targets", "balancer", "vectordb", "embeddings", "model_name_header",
                                "response_streaming", "max_request_body_size", "llm_format"), t.problems)
    _pick(plugin, cfg.get("balancer"), BALANCER_FIELDS, t, "balancer")
    targets = cfg.get("targets")
    if not isinstance(targets, list) or not targets:
        plugin.problem(t.problems, "needs targets", "config", "targets")
        return
    balancer = _balancer(plugin, cfg.get("balancer"), t)
    found = []
    for i, entry in enumerate(targets):
        target = _pick(plugin, entry, TARGET_FIELDS, t, "targets", i)
        native, base = _settings(plugin, target, t, "targets", i)
        if not (native and base):
            return
        found.append((target, native, base))
    native, base = found[0][1], found[0][2]
    if len(found) > 1:
        for i, (_, other, _) in enumerate(found):
            if other["route_type"] != native["route_type"]:
                plugin.problem(t.problems, "every target needs the same route_type", "config", "targets", i, "route_type")
                return
        native = {k: v for k, v in native.items() if k not in ("auth", "model")}
        native["targets"] = [{"url": b, **({"auth": n["auth"]} if "auth" in n else {}), "model": n["model"],
                              **({"weight": tg["weight"]} if "weight" in tg else {})} for tg, n, b in found]
        native["balancer"] = balancer
    _place(build, t, plugin, native, base)


def _balancer(plugin: Plugin, value: Any, t: "Translator") -> dict[str, Any]:
    options = _pick(plugin, value, BALANCER_FIELDS, t, "balancer")
    native: dict[str, Any] = {}
    algorithm = options.get("algorithm", "round-robin")
    if algorithm not in ALGORITHMS:
        plugin.problem(t.problems, f"algorithm {algorithm!r} is not supported ({', '.join(ALGORITHMS)})",
                       "config", "balancer", "algorithm")
    native["algorithm"] = algorithm
    for name, used_by in (("latency_strategy", "lowest-latency"), ("tokens_count_strategy", "lowest-usage"),
                          ("hash_on_header", "consistent-hashing")):
        if algorithm == used_by and name in options:
            native[name] = options[name]
    if "retries" in options:
        native["retries"] = options["retries"]
    if "connect_timeout" in options:
        native["connect_timeout"] = min(60.0, options["connect_timeout"] / 1000)  # Kong: milliseconds
    criteria = options.get("failover_criteria", ["error", "timeout"])
    if not isinstance(criteria, list) or not set(criteria) <= set(CRITERIA):
        plugin.problem(t.problems, f"failover_criteria: only {', '.join(CRITERIA)} are supported",
                       "config", "balancer", "failover_criteria")
    else:
        native["failover_criteria"] = criteria
    return native


HANDLERS = {AI_PROXY: ai_proxy, AI_PROXY_ADVANCED: ai_proxy_advanced}
PERSONAL = (AI_PROXY,)  # plugins this module reads when scoped to a consumer or consumer group


def ai_prompt_guard(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    options = take_options(plugin, ("allow_patterns", "deny_patterns", "allow_all_conversation_history",
                                    "match_all_roles"), t.problems)
    native = build.native.get("ai")
    if native is None:
        plugin.problem(t.problems, "needs ai-proxy or ai-proxy-advanced on the same route (as in Kong)")
        return
    native["prompt_guard"] = options


HANDLERS["ai-prompt-guard"] = ai_prompt_guard
