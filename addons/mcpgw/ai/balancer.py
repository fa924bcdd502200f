"""Targets of a balanced LLM route (`ai.targets`, gateway mode): which provider a request goes to.

Round-robin is nginx's smooth weighted round-robin (weights honoured, no bursts to one target);
least-connections picks the target with the fewest requests in flight (ties: the first);
lowest-latency the one with the lowest peak EWMA of its latency (time per output token, or end
to end), decayed with time so that a target once slow is tried again; lowest-usage the one with
the fewest tokens (or least cost) lately; consistent-hashing ranks the targets by rendezvous
hashing of a header's value (one value, one target, and the same failover order); priority
tries the targets of the highest weight first, in turn, and a lower weight's only when all of
those fail. Health is passive: a
target that could not be connected to, timed out, or answered 5xx or 429 is skipped for
`failure_cooldown` seconds. Before a request goes to a target that has not answered well within
`probe_after` seconds, the gateway opens a TCP connection to it (at most `connect_timeout`): a
target that is down is skipped for the next one, up to `retries` others, before anything is
sent. With answer statuses in `failover_criteria` (http_429, http_5xx, ...) the request goes
through relay.py, which sends it on to the next target after such an answer, before any byte
of it reached the client; without them such an answer reaches the client as it is and only
marks the target. State is per process and per policy version."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from mitmproxy import http

from .. import headers
from ..policy.derived import PerPolicy
from .relay import relay
from .request import LlmState, ai_error, settings_of
from .settings import AiSettings, AiTarget

if TYPE_CHECKING:
    from ..context import FlowContext
    from ..policy.models import Policy
    from .usage import LlmCall

log = logging.getLogger("mcpgw.ai")
LATENCY_DECAY = 10.0  # seconds: how fast a latency measure is forgotten (Kong's EWMA decay time)
USAGE_DECAY = 60.0  # seconds: how fast a target's usage is forgotten (lowest-usage)


@dataclass(slots=True, eq=False)
class TargetState:
    index: int
    target: AiTarget
    scheme: str
    host: str
    port: int
    path: str
    current: int = 0  # smooth weighted round-robin
    in_flight: int = 0
    last_ok: float = 0.0
    down_until: float = 0.0
    latency: float = 0.0  # lowest-latency: peak EWMA of the latency_strategy's measure (seconds)
    latency_at: float = 0.0  # when it was last measured (0: never)
    usage: float = 0.0  # lowest-usage: the tokens_count_strategy's sum, decaying
    usage_at: float = 0.0

    def usage_score(self, now: float) -> float:
        return self.usage * math.exp(-(now - self.usage_at) / USAGE_DECAY) if self.usage_at else 0.0

    def used(self, amount: float) -> None:
        now = time.monotonic()
        self.usage, self.usage_at = self.usage_score(now) + amount, now

    def latency_score(self, now: float) -> float:
        """The measure decayed toward 0 with time, so a target once slow is tried again later."""
        return self.latency * math.exp(-(now - self.latency_at) / LATENCY_DECAY) if self.latency_at else 0.0

    def measured(self, sample: float) -> None:
        now = time.monotonic()
        current = self.latency_score(now)
        # peak EWMA: a worse sample counts at once, a better one only gradually
        weight = math.exp(-(now - self.latency_at) / LATENCY_DECAY) if self.latency_at else 0.0
        self.latency = sample if sample >= current else current * weight + sample * (1 - weight)
        self.latency_at = now

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.scheme == "https" else 80) else f"{host}:{self.port}"

    def failed(self, settings: AiSettings, why: str) -> None:
        self.down_until = time.monotonic() + settings.balancer.failure_cooldown
        log.warning("LLM target %s failed (%s): skipped for %.0fs", self.target.url, why, settings.balancer.failure_cooldown)

    def ok(self) -> None:
        self.last_ok = time.monotonic()
        self.down_until = 0.0


@dataclass(slots=True)
class RoutePool:
    settings: AiSettings
    targets: list[TargetState] = field(default_factory=list)
    turns: dict[int, int] = field(default_factory=dict)  # priority: the next turn within each weight's group

    def order(self, hash_key: str | None = None) -> list[TargetState]:
        """Every target, the one the algorithm picks first, then the others in their turn."""
        algorithm = self.settings.balancer.algorithm
        if algorithm == "least-connections":
            return sorted(self.targets, key=lambda t: t.in_flight)
        if algorithm in ("lowest-latency", "lowest-usage"):  # never measured first, so each gets measured
            now = time.monotonic()
            score = TargetState.latency_score if algorithm == "lowest-latency" else TargetState.usage_score
            return sorted(self.targets, key=lambda t: (score(t, now), t.in_flight))
        if algorithm == "consistent-hashing" and hash_key:
            # rendezvous hashing: a key ranks the targets the same way every time (its failover order
            # too), and a target added or removed moves only the keys it wins or held
            return sorted(self.targets, reverse=True, key=lambda t: hashlib.blake2b(
                f"{t.index}\0{t.target.url}\0{hash_key}".encode(), digest_size=8).digest())
        if algorithm == "priority":  # Kong's groups are the targets of one weight, the highest first
            out = []
            for weight in sorted({t.target.weight for t in self.targets}, reverse=True):
                group = [t for t in self.targets if t.target.weight == weight]
                turn = self.turns[weight] = (self.turns.get(weight, -1) + 1) % len(group)
                out += group[turn:] + group[:turn]
            return out
        total = sum(t.target.weight for t in self.targets)
        for t in self.targets:
            t.current += t.target.weight
        best = max(self.targets, key=lambda t: t.current)
        best.current -= total
        i = self.targets.index(best)
        return self.targets[i:] + self.targets[:i]


def _pools(policy: "Policy") -> dict[str, RoutePool]:
    pools = {}
    for name, route in policy.routes.items():
        s = getattr(route, "ai", None)
        if s is None or not s.targets:
            continue
        states = []
        for i, t in enumerate(s.targets):
            parts = urlsplit(t.url)
            states.append(TargetState(i, t, parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80),
                                      parts.path.rstrip("/")))
        pools[name] = RoutePool(s, states)
    return pools


_pools_of = PerPolicy(_pools)


async def _reachable(t: TargetState, timeout: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(t.host, t.port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True


async def choose_target(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """Request phase, before ai.request.prepare (which applies the target's model and key)."""
    settings = settings_of(ctx)
    if settings is None or not settings.targets or ctx.mode != "gateway":
        return None
    pool = _pools_of(ctx.snapshot.policy)[ctx.match.name]
    balancer = settings.balancer
    now = time.monotonic()
    key = flow.request.headers.get(balancer.hash_on_header) if balancer.algorithm == "consistent-hashing" else None
    order = [t for t in pool.order(key) if t.down_until <= now][: balancer.retries + 1]
    attempts = 0
    for i, t in enumerate(order):
        attempts += 1
        if now - t.last_ok > balancer.probe_after and not await _reachable(t, balancer.connect_timeout):
            t.failed(settings, "connection refused or timed out")
            continue
        t.in_flight += 1
        ctx.ai = LlmState(settings, None, settings.model.options, target=t, attempts=attempts)
        if balancer.retry_statuses and order[i + 1:]:  # retries after an answer: through the relay
            await relay.ensure_started()
            ctx.ai.candidates = order[i + 1:]
        return None
    return ai_error(503, "No provider of this route is available; try again later", kind="server_error",
                    code="no_provider_available")


def apply_target(ctx: "FlowContext", flow: http.HTTPFlow) -> None:
    """After forwarding.forward (set_endpoint's work for a balanced route): the target's origin."""
    state: LlmState | None = ctx.ai
    t: TargetState | None = state.target if state is not None else None
    if t is None or not ctx.upstream_set:
        return None
    req = flow.request
    _, sep, query = req.path.partition("?")
    req.scheme = t.scheme
    req.data.host, req.data.port = t.host, t.port
    req.path = t.path + state.settings.endpoint + sep + query
    if req.is_http2 or req.is_http3:
        req.authority = t.authority
    headers.put(req.headers, "Host", t.authority)
    if state.candidates:
        if state.stream:
            relay.register(ctx, flow)  # a stream can only be retried by the relay, which then relays it
        else:
            state.retry_job = relay.job_of(ctx, flow)  # JSON: straight to the target, retried from the response hook
    return None


def switch(state: LlmState, t: TargetState) -> None:
    """The relay sends the request on to another target: it is now the one in flight."""
    old: TargetState | None = state.target
    if old is not None and not state.target_done:  # (done: its answer was counted already)
        old.in_flight = max(0, old.in_flight - 1)
    t.in_flight += 1
    state.target, state.attempts, state.target_done = t, state.attempts + 1, False


def observe(state: LlmState, call: "LlmCall") -> None:
    """A finished call, for lowest-latency (time per output token, tpot: after the first token
    for a stream, the whole answer for JSON; or end to end, e2e) and lowest-usage (its tokens or
    cost, by tokens_count_strategy)."""
    t: TargetState | None = state.target
    b = state.settings.balancer
    if t is None or call.status is None or call.status >= 400:
        return
    u = call.usage
    if b.algorithm == "lowest-latency":
        sample = call.latency_ms / 1000
        if b.latency_strategy == "tpot" and u is not None and u.completion_tokens:
            before = (call.ttft_ms or 0.0) / 1000 if call.streamed else 0.0
            sample = (sample - before) / u.completion_tokens
        t.measured(max(sample, 0.0))
    elif b.algorithm == "lowest-usage" and u is not None:
        t.used({"total-tokens": u.total_tokens, "prompt-tokens": u.prompt_tokens,
                "completion-tokens": u.completion_tokens, "cost": call.cost or 0.0}[b.tokens_count_strategy])


def answered(state: LlmState, status: int | None, *, reached: bool = True) -> None:
    """The target's answer (None: no answer at all) updates its health, once per request;
    reached=False: the gateway answered itself, the target was not asked."""
    t: TargetState | None = state.target
    if t is None or state.target_done:
        return
    state.target_done = True
    t.in_flight = max(0, t.in_flight - 1)
    if not reached:
        return
    if status is None or status >= 500 or status == 429:
        t.failed(state.settings, f"HTTP {status}" if status else "no answer")
    else:
        t.ok()
