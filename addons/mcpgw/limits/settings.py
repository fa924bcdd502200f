"""Policy settings of request rate limits (`routes.<name>.rate_limits`) and of the Redis server
shared state lives in (`gateway.state`). Kong rate-limiting-advanced's vocabulary: paired
`limit[]` / `window_size[]`, `window_type`, `identifier`, `namespace`, `hide_client_headers`,
`strategy`, consumer-group overrides; and, beyond Kong, `methods` / `tools` so that a rule
counts only the MCP messages it names."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, model_validator

from ..policy.base import StrictModel

Identifier = Literal["consumer", "credential", "ip", "header", "path", "service"]
TokenFact = Literal["consumer", "consumer_group", "model", "provider", "ip", "path", "header"]


def _check_pairs(limit: list[int], window_size: list[int], where: str) -> None:
    if len(limit) != len(window_size):
        raise ValueError(f"{where}: limit and window_size must have the same length "
                         f"({len(limit)} limits, {len(window_size)} window sizes)")
    if len(set(window_size)) != len(window_size):
        raise ValueError(f"{where}: each window_size may appear only once")


class GroupLimits(StrictModel):
    """Kong's consumer-group override: members of the group get these windows instead."""

    limit: list[int] = Field(min_length=1, description="Requests allowed per window, paired with window_size")
    window_size: list[int] = Field(min_length=1, description="Window lengths in seconds")

    @model_validator(mode="after")
    def _pairs(self) -> "GroupLimits":
        _check_pairs(self.limit, self.window_size, "consumer group override")
        if any(n < 0 for n in self.limit) or any(w <= 0 for w in self.window_size):
            raise ValueError("limits must be >= 0 and window sizes > 0")
        return self


class LimitRule(StrictModel):
    """One counter per identified caller, with one or more windows that must all have room."""

    limit: list[int] = Field(min_length=1, description="Requests allowed per window (0: none), paired with window_size")
    window_size: list[int] = Field(min_length=1, description="Window lengths in seconds, e.g. [60, 3600]")
    window_type: Literal["sliding", "fixed"] = Field("sliding", description="sliding (Kong's default) or fixed windows")
    identifier: Identifier = Field("consumer", description="Whose requests share a counter (consumer: the consumer, "
                                                           "the client IP for anonymous callers)")
    header_name: str | None = Field(None, description="identifier: header: the header whose value identifies the caller")
    methods: list[str] | None = Field(None, description="Count only these MCP methods (e.g. tools/call); default: every "
                                                        "HTTP request of the route")
    tools: list[str] | None = Field(None, description="Count only tools/call of these tools")
    consumer_groups: dict[str, GroupLimits] = Field(default_factory=dict,
                                                    description="Other windows for members of these groups; the first "
                                                                "group listed that the caller is in applies")
    consumers: dict[str, GroupLimits] = Field(default_factory=dict,
                                              description="Other windows for these consumers (by username); before "
                                                          "consumer_groups, as Kong's consumer-scoped instances")
    only_groups: list[str] | None = Field(None, description="Apply this rule only to members of these consumer groups")
    only_consumers: list[str] | None = Field(None, description="Apply this rule only to these consumers (username); "
                                                               "with only_groups: to members or these consumers")
    namespace: str | None = Field(None, description="Counter namespace; rules sharing one share counters")
    error: Literal["http", "jsonrpc"] = Field("http", description="http: Kong's 429; jsonrpc: a JSON-RPC error per "
                                                                  "limited message (rules with methods or tools only)")
    shadow: bool = Field(False, description="Count and log, never refuse")
    count_refused: bool = Field(False, description="Refused requests count too, so a caller must pause to get room "
                                                   "again (Kong rate-limiting-advanced's disable_penalty: false)")

    @model_validator(mode="after")
    def _check(self) -> "LimitRule":
        _check_pairs(self.limit, self.window_size, "rate limit")
        if any(n < 0 for n in self.limit) or any(w <= 0 for w in self.window_size):
            raise ValueError("rate limit: limits must be >= 0 and window sizes > 0")
        if self.identifier == "header" and not self.header_name:
            raise ValueError("rate limit: identifier header needs header_name")
        if self.error == "jsonrpc" and not (self.methods or self.tools):
            raise ValueError("rate limit: error jsonrpc needs methods or tools (a per-request limit answers HTTP 429)")
        return self


class TokenRule(StrictModel):
    """A token budget on an LLM route (Kong's ai-rate-limiting-advanced): charged with each call's
    usage when its answer ends; a request arriving while a window is spent is refused."""

    provider: str = Field("openai", description="Provider name, as the X-AI-RateLimit-*-<provider> headers say it")
    limit: list[float] = Field(min_length=1, description="Tokens (or, with cost, the route's cost units) per window, "
                                                          "paired with window_size")
    window_size: list[int] = Field(min_length=1, description="Window lengths in seconds")
    window_type: Literal["sliding", "fixed"] = "sliding"
    tokens_count_strategy: Literal["total_tokens", "prompt_tokens", "completion_tokens", "cost"] = Field(
        "total_tokens", description="What a call costs: its tokens, or cost from the route's input_cost/output_cost")
    consumer_groups: dict[str, GroupLimits] = Field(default_factory=dict,
                                                    description="Other windows for members of these groups")
    only_groups: list[str] | None = Field(None, description="Apply only to members of these consumer groups")
    only_consumers: list[str] | None = Field(None, description="Apply only to these consumers (username, id or custom_id)")
    # Kong 3.14's policies[].match: every condition given must hold (AND)
    models: list[str] | None = Field(None, description="Apply only to calls of these models (the model requested, as "
                                                       "sent to the provider)")
    providers: list[str] | None = Field(None, description="Apply only on routes to these providers")
    paths: list[str] | None = Field(None, description="Apply only to request paths equal to or under these")
    ips: list[str] | None = Field(None, description="Apply only to callers (the TCP peer) in these addresses or networks")
    headers: dict[str, list[str]] | None = Field(None, description="Apply only to requests carrying these headers, "
                                                                   "with one of the values listed ([]: any value)")
    partition_by: list[TokenFact] = Field(["consumer"], description="Which facts of a call make a separate counter "
                                                                    "(Kong's partition_by); []: one counter for every "
                                                                    "call the rule applies to")
    name: str | None = Field(None, description="Names the X-AI-RateLimit-*-<name> headers and the refusal (default: "
                                               "provider)")
    fallback: bool = Field(False, description="Apply only to calls no other token rule of the route applies to "
                                              "(Kong: a policy without match)")

    @model_validator(mode="after")
    def _check(self) -> "TokenRule":
        if "header" in self.partition_by and not self.headers:
            raise ValueError("token limit: partition_by header needs headers (whose values partition)")
        for ip in self.ips or ():
            try:
                ipaddress.ip_network(ip, strict=False)
            except ValueError:
                raise ValueError(f"token limit: {ip!r} is not an IP address or network") from None
        _check_pairs(self.limit, self.window_size, "token limit")
        if any(n < 0 for n in self.limit) or any(w <= 0 for w in self.window_size):
            raise ValueError("token limit: limits must be >= 0 and window sizes > 0")
        if self.tokens_count_strategy != "cost" and any(n != int(n) for n in self.limit):
            raise ValueError("token limit: a number of tokens is a whole number (fractions: tokens_count_strategy cost)")
        return self


class RouteLimits(StrictModel):
    strategy: Literal["local", "redis"] = Field("local", description="local: this process's counters; redis: shared "
                                                                     "through gateway.state.redis")
    fault_tolerant: bool = Field(True, description="Redis unreachable: count locally (true) or refuse with 500 (false)")
    hide_client_headers: bool = Field(False, description="Send no RateLimit-* / X-RateLimit-* headers")
    error_code: int = Field(429, ge=400, le=599, description="Status of a refusal")
    error_message: str = Field("API rate limit exceeded", description="message of a refusal's body")
    rules: list[LimitRule] = Field(default_factory=list)
    tokens: list[TokenRule] = Field(default_factory=list, description="Token budgets (LLM routes, docs/limits.md)")

    @model_validator(mode="after")
    def _something(self) -> "RouteLimits":
        if not self.rules and not self.tokens:
            raise ValueError("rate_limits needs rules or tokens")
        return self


def check_route(route_name: str, limits: RouteLimits | None, groups: dict, state, consumers: dict | None = None) -> None:
    """Load-time checks that need the whole policy (called by the Policy model)."""
    if limits is None:
        return
    if limits.strategy == "redis" and state.redis is None:
        raise ValueError(f"route {route_name!r}: rate_limits strategy redis needs gateway.state.redis")
    for rule in [*limits.rules, *limits.tokens]:
        for g in list(rule.consumer_groups) + list(rule.only_groups or ()):
            if g not in groups:
                raise ValueError(f"route {route_name!r}: rate limit names consumer group {g!r}, which is not declared")
    for rule in limits.rules:
        for c in [*rule.consumers, *(rule.only_consumers or ())]:
            if consumers is not None and c not in consumers:
                raise ValueError(f"route {route_name!r}: rate limit names consumer {c!r}, which is not declared")
