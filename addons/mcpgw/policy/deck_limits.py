"""Kong's rate-limiting and rate-limiting-advanced on a decK route or service -> the route's
`rate_limits` (docs/limits.md); the plugin's `redis.*` -> `gateway.state.redis` (one Redis for
the whole gateway: two plugins naming different servers are refused).

rate-limiting:          second/minute/hour/day/month/year -> one fixed-window rule with those windows;
                        limit_by -> identifier; policy local|redis -> strategy (cluster refused).
ai-rate-limiting-advanced: llm_providers[{name, window_size[], limit[]}] (seed 002) and Kong 3.14's
                        policies[{match, limits}] -> token rules.
rate-limiting-advanced: limit[]/window_size[]/window_type/identifier/namespace -> one rule;
                        strategy local|redis; disable_penalty false (Kong's default: refused
                        requests count too) -> count_refused.
Both: fault_tolerant, hide_client_headers, error_code, error_message, header_name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .deck_plugins import Plugin, RouteBuild, take_options

if TYPE_CHECKING:
    from .deck import Translator

RL, RLA, AIRLA = "rate-limiting", "rate-limiting-advanced", "ai-rate-limiting-advanced"
WINDOWS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "month": 2592000, "year": 31536000}
IDENTIFIERS = ("consumer", "credential", "ip", "header", "path", "service")
COMMON = ("fault_tolerant", "hide_client_headers", "error_code", "error_message", "header_name", "redis")
RL_OPTIONS = (*WINDOWS, "limit_by", "policy", *COMMON, "sync_rate", "redis_host", "redis_port", "redis_password",
              "redis_username", "redis_ssl", "redis_ssl_verify", "redis_timeout", "redis_database")
RLA_OPTIONS = ("limit", "window_size", "window_type", "identifier", "namespace", "strategy", "sync_rate",
               "disable_penalty", "dictionary_name", "lock_dictionary_name", "retry_after_jitter_max", *COMMON)
AIRLA_OPTIONS = ("llm_providers", "policies", "window_type", "identifier", "tokens_count_strategy", "strategy", "sync_rate",
                 "namespace", "dictionary_name", "disable_penalty", "retry_after_jitter_max", *COMMON)
TOKEN_STRATEGIES = {"total_tokens": "total_tokens", "prompt_tokens": "prompt_tokens",
                    "completion_tokens": "completion_tokens", "cost": "cost"}
REDIS_FIELDS = {"host": "host", "port": "port", "database": "database", "username": "username",
                "password": "password", "ssl": "ssl", "ssl_verify": "ssl_verify", "timeout": "timeout"}
_REDIS_ATTRIBUTE = "_deck_limits_redis"  # on the Translator: (plugin, settings) of the first plugin naming Redis


def _redis(plugin: Plugin, options: dict[str, Any], t: "Translator") -> None:
    found = dict(options.get("redis") or {})
    for key in list(options):  # rate-limiting's older flat spelling, redis_host: ...
        if key.startswith("redis_"):
            found.setdefault(key[len("redis_"):], options[key])
    native: dict[str, Any] = {}
    for key, value in found.items():
        if value is None:
            continue
        if key not in REDIS_FIELDS:
            if key in ("sentinel_nodes", "cluster_nodes", "sentinel_master", "cluster_addresses", "sentinel_addresses"):
                plugin.problem(t.problems, "Redis Sentinel and Cluster are not supported: name one server (a "
                               "Sentinel-managed primary's address or a proxy; docs/scaling.md)", "config", "redis", key)
            elif key not in ("keepalive_pool_size", "keepalive_backlog", "connect_timeout", "read_timeout",
                             "send_timeout", "server_name"):
                plugin.problem(t.problems, "option not supported by this gateway", "config", "redis", key)
            continue
        native[REDIS_FIELDS[key]] = t.secret(value) if key in ("username", "password") else value
    if "timeout" in native:
        native["timeout"] = native["timeout"] / 1000  # Kong: milliseconds
    if not native:
        plugin.problem(t.problems, "strategy redis needs redis.host", "config", "redis")
        return
    first = getattr(t, _REDIS_ATTRIBUTE, None)
    if first is not None and first[1] != native:
        plugin.problem(t.problems, f"names another Redis than {first[0].name} does: the gateway uses one Redis "
                       "for all its shared state", "config", "redis")
        return
    setattr(t, _REDIS_ATTRIBUTE, (plugin, native))


def _common(plugin: Plugin, options: dict[str, Any], strategy: str, t: "Translator") -> dict[str, Any]:
    if strategy not in ("local", "redis"):
        plugin.problem(t.problems, f"{strategy!r} is not supported: local or redis (cluster counts through Kong's "
                       "database, which this gateway has none of)", "config")
        strategy = "local"
    limits: dict[str, Any] = {"strategy": strategy}
    if strategy == "redis":
        _redis(plugin, options, t)
    for key in ("fault_tolerant", "hide_client_headers", "error_code", "error_message"):
        if key in options:
            limits[key] = options[key]
    return limits


def _identifier(plugin: Plugin, value: Any, options: dict[str, Any], t: "Translator", rule: dict[str, Any]) -> None:
    if value not in IDENTIFIERS:
        plugin.problem(t.problems, f"{value!r} is not supported (supported: {', '.join(IDENTIFIERS)}; consumer "
                       "groups: use a native rule's consumer_groups)", "config")
        return
    rule["identifier"] = value
    if value == "header":
        rule["header_name"] = options.get("header_name")


def rate_limiting(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    options = take_options(plugin, RL_OPTIONS, t.problems)
    windows = [(options[name], size) for name, size in WINDOWS.items() if options.get(name) is not None]
    if not windows:
        plugin.problem(t.problems, "needs at least one of second, minute, hour, day, month, year", "config")
        return
    rule: dict[str, Any] = {"limit": [n for n, _ in windows], "window_size": [s for _, s in windows],
                            "window_type": "fixed"}  # Kong's rate-limiting counts fixed windows
    _identifier(plugin, options.get("limit_by", "consumer"), options, t, rule)
    limits = _common(plugin, options, options.get("policy", "local"), t)
    limits["rules"] = [rule]
    _add(build, t, plugin, limits)


def rate_limiting_advanced(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    options = take_options(plugin, RLA_OPTIONS, t.problems)
    rule: dict[str, Any] = {"limit": options.get("limit"), "window_size": options.get("window_size"),
                            "window_type": options.get("window_type", "sliding"),
                            "count_refused": not options.get("disable_penalty", False)}
    if options.get("namespace"):
        rule["namespace"] = options["namespace"]
    if options.get("retry_after_jitter_max") not in (None, 0):
        plugin.problem(t.problems, "only 0 is supported (Retry-After is exact)", "config", "retry_after_jitter_max")
    _identifier(plugin, options.get("identifier", "consumer"), options, t, rule)
    rule.update(_group_overrides(build, t, options))
    limits = _common(plugin, options, options.get("strategy", "local"), t)
    limits["rules"] = [rule]
    _add(build, t, plugin, limits)


def _group_overrides(build: RouteBuild, t: "Translator", route_options: dict[str, Any]) -> dict[str, Any]:
    """Consumer-group and consumer scoped rate-limiting-advanced instances (Kong's overrides):
    their windows for the group's members or the consumer; anything else must match the route's."""
    overrides: dict[str, Any] = {}
    for personal in build.personal:
        if personal.name != RLA:
            continue
        options = take_options(personal, RLA_OPTIONS, t.problems)
        for key, value in options.items():
            if key not in ("limit", "window_size") and route_options.get(key) != value:
                personal.problem(t.problems, "a consumer-group instance may change limit and window_size only (the "
                                 "route's instance decides the rest)", "config", key)
        windows = {"limit": options.get("limit"), "window_size": options.get("window_size")}
        if "consumer" in personal.scope:  # Kong: a consumer's own instance comes before its groups'
            overrides.setdefault("consumers", {})[personal.scope["consumer"]] = windows
        else:
            overrides.setdefault("consumer_groups", {})[personal.scope["consumer_group"]] = windows
    return overrides


def ai_rate_limiting_advanced(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    """Seed 002's form: llm_providers[{name, window_size[], limit[]}] -> one token rule each."""
    options = take_options(plugin, AIRLA_OPTIONS, t.problems)
    providers = options.get("llm_providers")
    if options.get("policies") is None and (not isinstance(providers, list) or not providers):
        plugin.problem(t.problems, "needs llm_providers: [{name, window_size: [...], limit: [...]}] or policies", "config")
        return
    if options.get("identifier", "consumer") != "consumer":
        plugin.problem(t.problems, "only consumer is supported for token limits", "config", "identifier")
    strategy = str(options.get("tokens_count_strategy", "total_tokens")).replace("-", "_")
    if strategy not in TOKEN_STRATEGIES:
        plugin.problem(t.problems, f"{strategy!r} is not supported (total_tokens, prompt_tokens, completion_tokens, "
                       "cost)", "config", "tokens_count_strategy")
        return
    tokens = _policies(plugin, options.get("policies") or [], options, TOKEN_STRATEGIES[strategy], t)
    for i, entry in enumerate(providers or []):
        if not isinstance(entry, dict) or set(entry) - {"name", "window_size", "limit"}:
            plugin.problem(t.problems, "expected {name, window_size, limit}", "config", "llm_providers", i)
            continue
        tokens.append({"provider": entry.get("name", "openai"), "limit": entry.get("limit"),
                       "window_size": entry.get("window_size"), "window_type": options.get("window_type", "sliding"),
                       "tokens_count_strategy": TOKEN_STRATEGIES[strategy]})
    limits = _common(plugin, options, options.get("strategy", "local"), t)
    limits["rules"], limits["tokens"] = [], tokens
    _add(build, t, plugin, limits)


def _policies(plugin: Plugin, policies: Any, options: dict[str, Any], strategy: str, t: "Translator") -> list[dict]:
    """Kong 3.14's policies[{match: [...], limits: [{limit, window_size}]}]: match on provider,
    consumer (key username, id or custom_id) and consumer_group; other match types are refused."""
    tokens = []
    if not isinstance(policies, list):
        plugin.problem(t.problems, "expected a list", "config", "policies")
        return tokens
    for i, policy in enumerate(policies):
        where = ("config", "policies", i)
        limits = policy.get("limits") if isinstance(policy, dict) else None
        if not isinstance(limits, list) or not limits or not all(isinstance(x, dict) for x in limits):
            plugin.problem(t.problems, "needs limits: [{limit, window_size}]", *where)
            continue
        rule: dict[str, Any] = {"provider": "openai", "limit": [x.get("limit") for x in limits],
                                "window_size": [x.get("window_size") for x in limits],
                                "window_type": options.get("window_type", "sliding"), "tokens_count_strategy": strategy}
        for j, match in enumerate(policy.get("match") or []):
            kind, values = (match.get("type"), match.get("values")) if isinstance(match, dict) else (None, None)
            if not isinstance(values, list) or not values:
                plugin.problem(t.problems, "a match needs values", *where, "match", j)
            elif kind == "provider":
                if len(values) != 1:
                    plugin.problem(t.problems, "one provider per policy (a route has one)", *where, "match", j)
                rule["provider"] = values[0]
            elif kind == "consumer" and match.get("key", "id") in ("username", "id", "custom_id"):
                rule["only_consumers"] = [str(v) for v in values]
            elif kind == "consumer_group":
                rule["only_groups"] = [str(v) for v in values]
            else:
                plugin.problem(t.problems, f"match type {kind!r} is not supported (provider, consumer, consumer_group)",
                               *where, "match", j)
        tokens.append(rule)
    return tokens


def _add(build: RouteBuild, t: "Translator", plugin: Plugin, limits: dict[str, Any]) -> None:
    limits.setdefault("rules", [])
    found = build.native.get("rate_limits")
    lists = ("rules", "tokens")
    if found is None:
        build.native["rate_limits"] = limits
    elif {k: v for k, v in found.items() if k not in lists} == {k: v for k, v in limits.items() if k not in lists}:
        for key in lists:  # several plugins on one route: all their limits apply, as in Kong
            if limits.get(key):
                found[key] = found.get(key, []) + limits[key]
    else:
        plugin.problem(t.problems, "differs from the other rate-limiting plugin of this route in strategy, "
                       "fault_tolerant, hide_client_headers or error: the gateway applies one such setting per route")
        return
    build.origin(t, "rate_limits", plugin)


def gateway_state(t: "Translator", gateway: dict[str, Any]) -> None:
    """The Redis the plugins named, as the native gateway.state (called once the routes are built)."""
    found = getattr(t, _REDIS_ATTRIBUTE, None)
    if found is not None:
        gateway["state"] = {"redis": found[1]}


PERSONAL = frozenset({RLA})  # accepted consumer-group scoped, beside a route-level instance
HANDLERS = {RL: rate_limiting, RLA: rate_limiting_advanced, AIRLA: ai_rate_limiting_advanced}
