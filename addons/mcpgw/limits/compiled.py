"""A route's rate limits, compiled once per policy version: windows as tuples, method and tool
sets, the counter key's fixed part."""

from __future__ import annotations

from dataclasses import dataclass

from ..policy.derived import PerPolicy
from .counters import Window
from .settings import LimitRule, RouteLimits


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule: LimitRule
    index: int
    windows: tuple[Window, ...]
    groups: tuple[tuple[str, tuple[Window, ...]], ...]  # consumer-group overrides, in policy order
    consumers: dict[str, tuple[Window, ...]]  # consumer overrides, by username
    only_groups: frozenset[str] | None
    only_consumers: frozenset[str] | None
    methods: frozenset[str] | None  # None: counts HTTP requests
    tools: frozenset[str] | None
    scope: str  # the counter key's fixed part: namespace, or route and rule

    @property
    def per_message(self) -> bool:
        return self.methods is not None or self.tools is not None

    def applies(self, groups: tuple[str, ...], username: str | None) -> bool:
        """only_groups and only_consumers: a member of one of the groups, or one of the consumers."""
        if self.only_groups is None and self.only_consumers is None:
            return True
        return bool(self.only_groups and self.only_groups.intersection(groups)) or \
            (self.only_consumers is not None and username in self.only_consumers)

    def windows_for(self, groups: tuple[str, ...], username: str | None = None) -> tuple[Window, ...]:
        if username is not None and (own := self.consumers.get(username)) is not None:
            return own
        for name, windows in self.groups:
            if name in groups:
                return windows
        return self.windows

    def cost(self, messages) -> int:
        """How many of this request's messages the rule counts."""
        n = 0
        for m in messages:
            method = m.method
            if method is None or m.kind != "request":
                continue
            if self.tools is not None and method == "tools/call":
                params = m.params
                if type(params) is dict and params.get("name") in self.tools:
                    n += 1
            elif self.methods is not None and method in self.methods:
                n += 1
        return n


@dataclass(frozen=True, slots=True)
class CompiledLimits:
    settings: RouteLimits
    rules: tuple[CompiledRule, ...]
    per_request: tuple[CompiledRule, ...] = ()  # no methods/tools: decided at request headers, before the body
    per_message: tuple[CompiledRule, ...] = ()  # methods/tools: decided once the body's messages are known


def _windows(limit: list[int], sizes: list[int]) -> tuple[Window, ...]:
    return tuple(Window(n, s) for n, s in sorted(zip(limit, sizes), key=lambda p: p[1]))


def _compile(policy) -> dict[str, CompiledLimits]:
    out = {}
    for name, route in policy.routes.items():
        settings = getattr(route, "rate_limits", None)
        if settings is None:
            continue
        rules = []
        for i, rule in enumerate(settings.rules):
            methods = frozenset(rule.methods) if rule.methods is not None else None
            tools = frozenset(rule.tools) if rule.tools is not None else None
            if tools is not None and methods is not None:
                methods = methods - {"tools/call"}  # tools/call counts only the named tools
            rules.append(CompiledRule(
                rule, i, _windows(rule.limit, rule.window_size),
                tuple((g, _windows(o.limit, o.window_size)) for g, o in rule.consumer_groups.items()),
                {c: _windows(o.limit, o.window_size) for c, o in rule.consumers.items()},
                frozenset(rule.only_groups) if rule.only_groups is not None else None,
                frozenset(rule.only_consumers) if rule.only_consumers is not None else None,
                methods, tools,
                f"ns:{rule.namespace}" if rule.namespace else f"r:{name}:{i}"))
        out[name] = CompiledLimits(settings, tuple(rules), tuple(r for r in rules if not r.per_message),
                                   tuple(r for r in rules if r.per_message))
    return out


route_limits = PerPolicy(_compile)
