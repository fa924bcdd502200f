"""One target of a balanced LLM route and what its answers do to it: its balancer state
(weights, requests in flight, latency and usage measures, passive health) and the updates of a
request's life (switch to it, observe the finished call, record its answer). Shared by the
balancer, which chooses targets, and the retry relay, which moves a request from one to the next."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .request import LlmState
from .settings import AiSettings, AiTarget

if TYPE_CHECKING:
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
