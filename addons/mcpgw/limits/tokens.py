"""Token limits on LLM routes (Kong's ai-rate-limiting-advanced): `rate_limits.tokens`.

Before the call (`check_tokens`, an LLM request phase): refused with 429 while any window of a
rule that applies to the call is spent, i.e. the request after the one that crossed the limit;
the windows' state as X-AI-RateLimit-Limit-<size>-<name> and X-AI-RateLimit-Remaining-<size>-<name>.
Which rules apply and which counter each charges (consumer, group, model, provider, path, IP,
header: token_match.py) is decided here, once, and kept on the flow. After the call (`charge`,
from the limits child addon when the answer has ended, JSON or stream): the usage the provider
reported (ai/usage.py's Usage) is added to every window of those counters, whatever the limit (a
call already answered cannot be refused).

Counters live in the route's strategy (local or Redis, with the same fallback as request limits)."""

from __future__ import annotations

import asyncio
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
from .token_match import CallFacts, Matcher

log = logging.getLogger("mcpgw.limits")

COST_SCALE = 1_000_000  # cost is counted in millionths of the route's unit: counters are integers


@dataclass(frozen=True, slots=True)
class CompiledTokens:
    rule: TokenRule
    index: int
    windows: tuple[Window, ...]
    groups: tuple[tuple[str, tuple[Window, ...]], ...]
    match: Matcher

    def windows_for(self, groups: tuple[str, ...]) -> tuple[Window, ...]:
        for name, windows in self.groups:
            if name in groups:
                return windows
        return self.windows

    @property
    def label(self) -> str:
        return self.rule.name or self.rule.provider


@dataclass(frozen=True, slots=True)
class Charge:
    """Decided when the call began: what its usage is charged to when its answer ends."""

    counters: object
    rule: CompiledTokens
    key: str
    windows: tuple[Window, ...]


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
                                     for g, o in r.consumer_groups.items()), Matcher.of(r))
                for i, r in enumerate(limits.tokens)))
    return out


token_limits = PerPolicy(_compile)
_pending: set[asyncio.Task] = set()


def _key(route: str, rule: CompiledTokens, facts: CallFacts) -> str:
    return f"t:{route}:{rule.index}:{rule.match.counter(facts)}"


def _facts(ctx: FlowContext, flow: http.HTTPFlow) -> CallFacts:
    identity, state = ctx.identity, ctx.ai
    peer = flow.client_conn.peername
    return CallFacts(
        consumer=(identity.username or identity.id) if identity is not None else None,
        subjects=identity.subjects() if identity is not None else (),
        groups=identity.groups if identity is not None else (),
        model=getattr(state, "model", None),
        provider=state.settings.model.provider if state is not None else "",
        ip=peer[0] if peer else "", path=flow.request.path.split("?", 1)[0], headers=flow.request.headers)


def _headers(results: list[tuple[CompiledTokens, Outcome]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for rule, result in results:
        scale = _scale(rule.rule)
        for state in result.windows:
            suffix = f"{state.window.size}-{rule.label}"
            headers[f"X-AI-RateLimit-Limit-{suffix}"] = f"{state.window.limit / scale:g}"
            headers[f"X-AI-RateLimit-Remaining-{suffix}"] = f"{state.remaining / scale:g}"
    return headers


async def check_tokens(ctx: FlowContext, flow: http.HTTPFlow) -> http.Response | None:
    """The phase (LLM request phases, once the route's model is known)."""
    policy = ctx.snapshot.policy
    route = ctx.route_name or ""
    found = token_limits(policy).get(route)
    if found is None:
        return None
    limits, rules = found
    facts = _facts(ctx, flow)
    counters = backend.for_route(limits, policy)
    shown, spent = [], []
    applying = [r for r in rules if not r.rule.fallback and r.match.applies(facts)]
    applying = applying or [r for r in rules if r.rule.fallback and r.match.applies(facts)]
    if not applying:
        return None
    charges = [Charge(counters, rule, _key(route, rule, facts), rule.windows_for(facts.groups)) for rule in applying]
    try:  # only asks (charge False): a call's tokens are known when it ends; one Redis round trip for all
        results = await counters.check_many([(c.key, c.windows, 1, c.rule.rule.window_type == "sliding", False, False)
                                             for c in charges])
    except backend.Unavailable:
        return json_response(500, {"message": "An unexpected error occurred: the rate limit store is unreachable"})
    for rule, result in zip(applying, results):
        (shown if result.allowed else spent).append((rule, result))
    headers = _headers(spent + shown) if not limits.hide_client_headers else {}
    if spent:
        labels = ", ".join(dict.fromkeys(r.label for r, _ in spent))
        who = f"consumer {facts.consumer!r}" if facts.consumer else "an anonymous caller"
        log.info("route %s: token limit refused %s", route, who)
        backend.stats.refused += 1
        retry = str(max(o.retry_after for _, o in spent))
        headers["Retry-After"] = retry  # kept when headers are hidden: it is the answer
        if not limits.hide_client_headers:  # Kong's, per spent window and overall
            for rule, result in spent:
                for state in result.windows:
                    if state.remaining <= 0:
                        suffix = f"{state.window.size}-{rule.label}"
                        headers[f"X-AI-RateLimit-Retry-After-{suffix}"] = str(result.retry_after)
                        headers[f"X-AI-RateLimit-Reset-{suffix}"] = str(state.reset)
            headers["X-AI-RateLimit-Retry-After"] = headers["X-AI-RateLimit-Reset"] = retry
        return json_response(limits.error_code, {"message": f"AI token rate limit exceeded for provider(s): {labels}"},
                             headers)
    if headers:
        ctx.limit_headers = {**(ctx.limit_headers or {}), **headers}
    ctx.token_charges = charges
    return None


def _amount(rule: TokenRule, used: usage.Usage, cost: float | None) -> int:
    if rule.tokens_count_strategy == "cost":  # None when the route sets no input_cost/output_cost
        return math.ceil((cost or 0) * COST_SCALE)
    return {"total_tokens": used.total_tokens, "prompt_tokens": used.prompt_tokens,
            "completion_tokens": used.completion_tokens}[rule.tokens_count_strategy]


def charge(ctx: FlowContext) -> None:
    """Once the call's answer has ended (LimitsAddon: response or error): its usage, as the
    provider reported it (a stream's usage chunk included), charged to the counters chosen when
    it began, whatever the limit. Only schedules: the event loop is never held."""
    charges, ctx.token_charges = ctx.token_charges, None  # once, whichever hook comes
    state = ctx.ai
    used = getattr(state, "usage", None)
    if not charges or used is None:
        return
    cost = usage.cost(used, state.options.input_cost, state.options.output_cost)
    checks = []
    for c in charges:
        amount = _amount(c.rule.rule, used, cost)
        if amount > 0:  # penalty: charged whatever the limit, the call being answered already
            checks.append((c.key, c.windows, amount, c.rule.rule.window_type == "sliding", True))
    if checks:  # every counter of a route shares the route's strategy: one call, one round trip
        task = asyncio.get_running_loop().create_task(charges[0].counters.check_many(checks))
        _pending.add(task)
        task.add_done_callback(_done)


def _done(task: asyncio.Task) -> None:
    _pending.discard(task)
    if not task.cancelled() and task.exception() is not None and not isinstance(task.exception(), backend.Unavailable):
        log.error("token limits: charging a call failed", exc_info=task.exception())
