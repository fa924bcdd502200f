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

import copy
from typing import TYPE_CHECKING, Any

from .deck_registry import Plugin, RouteBuild, take_options

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
                "password": "password", "ssl": "ssl", "ssl_verify": "ssl_verify", "timeout": "timeout",
                "server_name": "server_name"}
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
                             "send_timeout"):
                plugin.problem(t.problems, "option not supported by this gateway", "config", "redis", key)
            continue
        native[REDIS_FIELDS[key]] = t.secret(value) if key in ("username", "password") else value
    if "timeout" in native:
        native["timeout"] = native["timeout"] / 1000  # Kong: milliseconds
    if not native.get("ssl"):
        native.pop("server_name", None)  # Kong sends it only over TLS
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
    windows = _fixed_windows(plugin, options, t)
    if windows is None:
        return
    rule: dict[str, Any] = {**windows, "window_type": "fixed"}  # Kong's rate-limiting counts fixed windows
    _identifier(plugin, options.get("limit_by", "consumer"), options, t, rule)
    rule.update(_group_overrides(build, t, options, RL))
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
    rule.update(_group_overrides(build, t, options, RLA))
    limits = _common(plugin, options, options.get("strategy", "local"), t)
    limits["rules"] = [rule]
    _add(build, t, plugin, limits)


def _fixed_windows(plugin: Plugin, options: dict[str, Any], t: "Translator") -> dict[str, list] | None:
    """rate-limiting's second .. year -> limit[] / window_size[]."""
    windows = [(options[name], size) for name, size in WINDOWS.items() if options.get(name) is not None]
    if not windows:
        plugin.problem(t.problems, "needs at least one of second, minute, hour, day, month, year", "config")
        return None
    return {"limit": [n for n, _ in windows], "window_size": [s for _, s in windows]}


def _group_overrides(build: RouteBuild, t: "Translator", route_options: dict[str, Any], name: str) -> dict[str, Any]:
    """Consumer-group and consumer scoped instances of the same plugin (Kong's overrides: the most
    specific instance applies): their windows for the group's members or the consumer; anything
    else must match the route's instance."""
    overrides: dict[str, Any] = {}
    window_keys = ("limit", "window_size") if name == RLA else tuple(WINDOWS)
    for personal in build.personal:
        if personal.name != name:
            continue
        options = take_options(personal, RLA_OPTIONS if name == RLA else RL_OPTIONS, t.problems)
        for key, value in options.items():
            if key not in window_keys and route_options.get(key) != value:
                personal.problem(t.problems, "a consumer-group instance may change its windows only (the route's "
                                 "instance decides the rest)", "config", key)
        windows = {"limit": options.get("limit"), "window_size": options.get("window_size")} if name == RLA \
            else _fixed_windows(personal, options, t)
        if windows is None:
            continue
        if "consumer" in personal.scope:  # Kong: a consumer's own instance comes before its groups'
            overrides.setdefault("consumers", {})[personal.scope["consumer"]] = windows
        else:
            overrides.setdefault("consumer_groups", {})[personal.scope["consumer_group"]] = windows
    return overrides


def ai_rate_limiting_advanced(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    """Seed 002's form, llm_providers[{name, window_size[], limit[]}] (one token rule each), or
    Kong 3.14's policies[{match, limits}]."""
    options = take_options(plugin, AIRLA_OPTIONS, t.problems)
    providers = options.get("llm_providers")
    if options.get("policies") is None and (not isinstance(providers, list) or not providers):
        plugin.problem(t.problems, "needs llm_providers: [{name, window_size: [...], limit: [...]}] or policies", "config")
        return
    partition = TOKEN_IDENTIFIERS.get(options.get("identifier", "consumer"))
    if partition is None:
        plugin.problem(t.problems, f"identifier {options.get('identifier')!r} is not supported for token limits "
                       f"({', '.join(TOKEN_IDENTIFIERS)})", "config", "identifier")
        return
    strategy = _count_strategy(plugin, options.get("tokens_count_strategy", "total_tokens"), t, "config")
    if strategy is None:
        return
    tokens = _policies(plugin, options.get("policies") or [], options, strategy, t)
    for i, entry in enumerate(providers or []):
        if not isinstance(entry, dict) or set(entry) - {"name", "window_size", "limit"}:
            plugin.problem(t.problems, "expected {name, window_size, limit}", "config", "llm_providers", i)
            continue
        tokens.append({"provider": entry.get("name", "openai"), "limit": entry.get("limit"),
                       "window_size": entry.get("window_size"), "window_type": options.get("window_type", "sliding"),
                       "tokens_count_strategy": strategy, **({"partition_by": partition} if partition != ["consumer"]
                                                             else {})})
    limits = _common(plugin, options, options.get("strategy", "local"), t)
    limits["rules"], limits["tokens"] = [], tokens
    _add(build, t, plugin, limits)


TOKEN_IDENTIFIERS = {"consumer": ["consumer"], "ip": ["ip"], "path": ["path"], "service": []}
# Kong 3.14 policies[].match[].type -> the native token rule's condition
MATCH_FIELDS = {"provider": "providers", "model": "models", "path": "paths", "ip": "ips",
                "consumer": "only_consumers", "consumer_group": "only_groups"}


def _count_strategy(plugin: Plugin, value: Any, t: "Translator", *where: Any) -> str | None:
    strategy = str(value).replace("-", "_")
    if strategy not in TOKEN_STRATEGIES:
        plugin.problem(t.problems, f"{strategy!r} is not supported (total_tokens, prompt_tokens, completion_tokens, "
                       "cost)", *where, "tokens_count_strategy")
        return None
    return TOKEN_STRATEGIES[strategy]


def _policies(plugin: Plugin, policies: Any, options: dict[str, Any], strategy: str, t: "Translator") -> list[dict]:
    """Kong 3.14's policies[{match: [...], limits: [{limit, window_size, tokens_count_strategy}]}]:
    every match type (AND), partition_by, each limit's own count strategy (a policy counting two
    ways becomes one native rule per way). Headers are named policy-<n>, as Kong's page shows."""
    tokens: list[dict] = []
    if not isinstance(policies, list):
        plugin.problem(t.problems, "expected a list", "config", "policies")
        return tokens
    for i, policy in enumerate(policies):
        where = ("config", "policies", i)
        if isinstance(policy, dict) and policy.get("id") is not None:
            plugin.problem(t.problems, "reusable policy entities are not supported: give match and limits inline",
                           *where, "id")
            continue
        limits = policy.get("limits") if isinstance(policy, dict) else None
        if not isinstance(limits, list) or not limits or not all(isinstance(x, dict) for x in limits):
            plugin.problem(t.problems, "needs limits: [{limit, window_size}]", *where)
            continue
        base = _match(plugin, policy.get("match") or [], t, where)
        if base is None:
            continue
        by_strategy: dict[str, list[dict]] = {}
        for j, entry in enumerate(limits):
            counted = _count_strategy(plugin, entry.get("tokens_count_strategy", strategy), t, *where, "limits", j)
            if counted is not None:
                by_strategy.setdefault(counted, []).append(entry)
        for counted, entries in by_strategy.items():
            name = f"policy-{i + 1}" + (f"-{counted}" if len(by_strategy) > 1 else "")
            tokens.append({"provider": "openai", "name": name,
                           "limit": [x.get("limit") for x in entries], "window_size": [x.get("window_size") for x in entries],
                           "window_type": policy.get("window_type", options.get("window_type", "sliding")),
                           "tokens_count_strategy": counted, **copy.deepcopy(base),
                           **({"fallback": True} if not policy.get("match") else {})})
    return tokens


def _match(plugin: Plugin, matches: Any, t: "Translator", where: tuple) -> dict[str, Any] | None:
    """A policy's match conditions -> native conditions and partition_by; None when refused."""
    rule: dict[str, Any] = {"partition_by": []}
    ok = isinstance(matches, list)
    for j, match in enumerate(matches if ok else []):
        kind = match.get("type") if isinstance(match, dict) else None
        values, key = (match.get("values"), match.get("key")) if isinstance(match, dict) else (None, None)
        here = (*where, "match", j)
        if kind not in (*MATCH_FIELDS, "header") or (values is not None and not isinstance(values, list)):
            plugin.problem(t.problems, f"match type {kind!r} is not supported ({', '.join([*MATCH_FIELDS, 'header'])})",
                           *here)
            ok = False
            continue
        if kind == "consumer" and key not in (None, "id", "username", "custom_id"):
            plugin.problem(t.problems, "key must be id, username or custom_id", *here, "key")
            ok = False
        if kind == "consumer_group" and key not in (None, "name"):
            plugin.problem(t.problems, "consumer groups are matched by name (key: name)", *here, "key")
            ok = False
        if kind == "header":
            if not key:
                plugin.problem(t.problems, "a header match needs key (the header name)", *here, "key")
                ok = False
                continue
            rule.setdefault("headers", {})[str(key)] = [str(v) for v in values or ()]
        elif values:
            field, given = MATCH_FIELDS[kind], [str(v) for v in values]
            # two matches of one type must both hold: only values in both
            rule[field] = [v for v in rule[field] if v in given] if field in rule else given
        if match.get("partition_by") is True and kind not in rule["partition_by"]:
            rule["partition_by"].append(kind)
    if not ok:
        return None
    providers = rule.get("providers")
    if providers and len(providers) == 1:
        rule["provider"] = providers[0]  # the provider the refusal names
    return rule


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


def personal_only(build: RouteBuild, t: "Translator") -> None:
    """Consumer or consumer-group scoped rate-limiting(-advanced) instances that apply to a route
    with no instance of that plugin at route, service or global level: in Kong they limit those
    callers only, the most specific instance (the consumer's) winning. -> one rule that applies
    only to those groups and consumers, each with its own windows (the overrides); the first
    instance's other settings stand for all (the others must agree, as overrides must)."""
    for name in (RL, RLA):
        found = [p for p in build.personal if p.name == name]
        if not found or name in build.plugins:
            continue
        before = len((build.native.get("rate_limits") or {}).get("rules", ()))
        HANDLERS[name](found[0], build, t)
        rules = (build.native.get("rate_limits") or {}).get("rules", [])
        if len(rules) == before:
            continue  # refused: the problem is recorded
        rule = rules[-1]
        groups = [p.scope["consumer_group"] for p in found if "consumer" not in p.scope]
        consumers = [p.scope["consumer"] for p in found if "consumer" in p.scope]
        rule.update({"only_groups": groups} if groups else {}, **({"only_consumers": consumers} if consumers else {}))


PERSONAL = frozenset({RL, RLA})  # accepted consumer(-group) scoped, beside a route-level instance
HANDLERS = {RL: rate_limiting, RLA: rate_limiting_advanced, AIRLA: ai_rate_limiting_advanced}
