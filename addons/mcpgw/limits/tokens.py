"""Token limits on LLM routes (Kong's ai-rate-limiting-advanced): `rate_limits.tokens`.

Before the call (`check_tokens`, an LLM request phase): refused with 429 while any window of a
rule that applies to the caller is spent, i.e. the request after the one that crossed the
limit; the windows' state as X-AI-RateLimit-Limit-<size>-<provider> and
X-AI-RateLimit-Remaining-<size>-<provider>. After the call: ai/usage.py publishes each finished
call (JSON or stream, once its usage is known) and `_charge` adds its tokens to every window of
every applying rule, whatever the limit (a call already answered cannot be refused).

Counters are per route, rule and consumer (an anonymous caller: one shared counter), in the
route's strategy (local or Redis, with the same fallback as request limits)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from dataclasses import dataclass

from mitmproxy import http

from ..ai import usage
from ..context import FlowContext
from ..policy.derived import PerPolicy
from ..responses import json_response
from . import backend
from .counters import Outcome, Window
from .settings import RouteLimits, TokenRule

log = logging.getLogger("mcpgw.limits")

COST_SCALE = 1_000_000  # cost is counted in millionths of the route's unit: counters are integers


@dataclass(frozen=True, slots=True)
class CompiledTokens:
    rule: TokenRule
    index: int
    windows: tuple[Window, ...]
    groups: tuple[tuple[str, tuple[Window, ...]], ...]

    def windows_for(self, groups: tuple[str, ...]) -> tuple[Window, ...]:
        for name, windows in self.groups:
            if name in groups:
                return windows
        return self.windows

    def applies(self, groups: tuple[str, ...], subjects: tuple[str, ...] | None) -> bool:
        """`subjects`: the caller's username, id and custom_id; None when only the name is known
        (charging: the rule was chosen by the same test when the call began)."""
        if self.rule.only_groups is not None and not set(self.rule.only_groups).intersection(groups):
            return False
        only = self.rule.only_consumers
        return only is None or subjects is None or bool(set(only).intersection(subjects))


def _windows(limit: list[float], sizes: list[int], scale: int = 1) -> tuple[Window, ...]:
    return tuple(Window(round(n * scale), s) for n, s in sorted(zip(limit, sizes), key=lambda p: p[1]))


def _scale(rule: TokenRule) -> int:
    return COST_SCALE if rule.tokens_count_strategy == "cost" else 1


def _compile(policy) -> dict[str, tuple[RouteLimits, tuple[CompiledTokens, ...]]]:
    out = {}
    for name, route in policy.routes.items():
        limits = getattr(route, "rate_limits", None)
        if limits is not None and limits.tokens:
            out[name] = (limits, tuple(
                CompiledTokens(r, i, _windows(r.limit, r.window_size, _scale(r)),
                               tuple((g, _windows(o.limit, o.window_size, _scale(r)))
                                     for g, o in r.consumer_groups.items()))
                for i, r in enumerate(limits.tokens)))
    return out


token_limits = PerPolicy(_compile)
_seen: dict[str, tuple[object, tuple[RouteLimits, tuple[CompiledTokens, ...]]]] = {}  # route -> (policy, limits)
_pending: set[asyncio.Task] = set()


def _key(route: str, rule: CompiledTokens, consumer: str | None) -> str:
    who = hashlib.blake2b(("c:" + consumer if consumer else "anonymous").encode(), digest_size=12).hexdigest()
    return f"t:{route}:{rule.index}:{who}"


def _headers(results: list[tuple[CompiledTokens, Outcome]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for rule, result in results:
        scale = _scale(rule.rule)
        for state in result.windows:
            suffix = f"{state.window.size}-{rule.rule.provider}"
            headers[f"X-AI-RateLimit-Limit-{suffix}"] = f"{state.window.limit / scale:g}"
            headers[f"X-AI-RateLimit-Remaining-{suffix}"] = f"{state.remaining / scale:g}"
    return headers


async def check_tokens(ctx: FlowContext, flow: http.HTTPFlow) -> http.Response | None:
    """The phase (LLM request phases, once the route's model is known)."""
    policy = ctx.snapshot.policy
    found = token_limits(policy).get(ctx.route_name or "")
    if found is None:
        return None
    route = ctx.route_name or ""
    _seen[route] = (policy, found)
    limits, rules = found
    identity = ctx.identity
    groups = identity.groups if identity is not None else ()
    consumer = (identity.username or identity.id) if identity is not None else None
    counters = backend.for_route(limits, policy)
    shown, spent = [], []
    subjects = identity.subjects() if identity is not None else ()
    for rule in rules:
        if not rule.applies(groups, subjects):
            continue
        try:
            result = await counters.check(_key(route, rule, consumer), rule.windows_for(groups), 1,
                                          rule.rule.window_type == "sliding", False, charge=False)
        except backend.Unavailable:
            return json_response(500, {"message": "An unexpected error occurred: the rate limit store is unreachable"})
        (shown if result.allowed else spent).append((rule, result))
    headers = _headers(spent + shown) if not limits.hide_client_headers else {}
    if spent:
        providers = ", ".join(dict.fromkeys(r.rule.provider for r, _ in spent))
        log.info("route %s: token limit refused %s", route, f"consumer {consumer!r}" if consumer else "an anonymous caller")
        backend.stats.refused += 1
        headers["Retry-After"] = str(max(o.retry_after for _, o in spent))
        return json_response(limits.error_code, {"message": f"AI token rate limit exceeded for provider(s): {providers}"},
                             headers)
    if headers:
        ctx.limit_headers = {**(ctx.limit_headers or {}), **headers}
    return None


def _amount(rule: TokenRule, call: usage.LlmCall) -> int:
    used = call.usage
    if rule.tokens_count_strategy == "cost":  # None when the route sets no input_cost/output_cost
        return math.ceil((call.cost or 0) * COST_SCALE)
    return {"total_tokens": used.total_tokens, "prompt_tokens": used.prompt_tokens,
            "completion_tokens": used.completion_tokens}[rule.tokens_count_strategy]


def _charge(call: usage.LlmCall) -> None:
    """ai/usage listener: runs in the event loop once a call's answer has ended; only schedules."""
    seen = _seen.get(call.route)
    if seen is None or call.usage is None:
        return
    policy, (limits, rules) = seen
    counters = backend.for_route(limits, policy)
    for rule in rules:
        if not rule.applies(call.groups, None if call.consumer else ()):
            continue
        amount = _amount(rule.rule, call)
        if amount <= 0:
            continue
        task = asyncio.get_running_loop().create_task(counters.check(
            _key(call.route, rule, call.consumer), rule.windows_for(call.groups), amount,
            rule.rule.window_type == "sliding", True))
        _pending.add(task)
        task.add_done_callback(_done)


def _done(task: asyncio.Task) -> None:
    _pending.discard(task)
    if not task.cancelled() and task.exception() is not None and not isinstance(task.exception(), backend.Unavailable):
        log.error("token limits: charging a call failed", exc_info=task.exception())


usage.subscribe(_charge)
