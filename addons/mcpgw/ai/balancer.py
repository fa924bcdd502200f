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
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from mitmproxy import http

from .. import headers
from ..policy.derived import PerPolicy
from .relay import relay
from .request import LlmState, ai_error, settings_of
from .settings import AiSettings
from .targets import TargetState

if TYPE_CHECKING:
    from ..context import FlowContext
    from ..policy.models import Policy



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


