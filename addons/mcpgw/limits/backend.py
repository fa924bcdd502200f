"""Which counters a route's limits use: this process's (`local`), or Redis's (`redis`) with
Kong's fallback to local counters while Redis cannot be reached (`fault_tolerant: true`), or
a refusal (`fault_tolerant: false`).

A failed Redis call (refused connection, timeout, an error reply) opens a short breaker: for
RETRY_INTERVAL seconds no request waits on Redis again, so an outage costs one timeout per
interval, not one per request. After it, the next request tries Redis again; when it answers,
shared counting resumes (counts made locally meanwhile are not copied back)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..state import redis_client
from .counters import LocalCounters, Outcome, Window
from .redis_counters import RedisCounters

if TYPE_CHECKING:
    from .settings import RouteLimits

log = logging.getLogger("mcpgw.limits")

RETRY_INTERVAL = 1.0


class Unavailable(Exception):
    """Redis is unreachable and the route's limits are not fault tolerant."""


@dataclass
class Stats:
    """Read by the metrics addon at scrape time."""

    refused: int = 0
    shadowed: int = 0
    redis_errors: int = 0  # failed Redis calls
    redis_fallbacks: int = 0  # checks answered by local counters because Redis was unreachable
    redis_refusals: int = 0  # checks refused because Redis was unreachable (fault_tolerant: false)
    redis_down: bool = False


stats = Stats()
local = LocalCounters()
_fallback = LocalCounters()  # used only while Redis is down, so that shared counts are not mixed in


class _Redis:
    def __init__(self, settings, fault_tolerant: bool):
        self.settings = settings
        self.fault_tolerant = fault_tolerant

    async def check(self, key: str, windows: tuple[Window, ...], cost: int, sliding: bool, penalty: bool,
                    charge: bool = True) -> Outcome:
        return (await self._run((key, windows, cost, sliding, penalty, charge), many=False))[0]

    async def check_many(self, checks: list[tuple]) -> list[Outcome]:
        """Several counters' checks (`(key, windows, cost, sliding, penalty[, charge])` each) in one round trip."""
        return await self._run(checks, many=True)

    async def _run(self, checks, many: bool) -> list[Outcome]:
        global _down_until
        if time.monotonic() >= _down_until:
            try:
                client = redis_client.client(self.settings)
                counters = _counters.get(id(client))
                if counters is None or counters.client is not client:
                    counters = _counters[id(client)] = RedisCounters(client, self.settings.key_prefix, time.time)
                result = await counters.check_many(checks) if many else [await counters.check(*checks)]
            except Exception as e:  # any failure of the store: the route's fault tolerance decides
                stats.redis_errors += 1
                _down_until = time.monotonic() + RETRY_INTERVAL
                if not stats.redis_down:
                    log.warning("rate limits: Redis %s:%d unreachable (%s): %s", self.settings.host, self.settings.port,
                                type(e).__name__, "counting locally" if self.fault_tolerant else "refusing")
                stats.redis_down = True
            else:
                if stats.redis_down:
                    log.warning("rate limits: Redis %s:%d reachable again: shared counting resumes",
                                self.settings.host, self.settings.port)
                    stats.redis_down = False
                return result
        if not self.fault_tolerant:
            stats.redis_refusals += 1
            raise Unavailable()
        stats.redis_fallbacks += 1
        return _fallback.check_many(checks) if many else [_fallback.check(*checks)]


class _Local:
    async def check(self, key: str, windows: tuple[Window, ...], cost: int, sliding: bool, penalty: bool,
                    charge: bool = True) -> Outcome:
        return local.check(key, windows, cost, sliding, penalty, charge)

    async def check_many(self, checks: list[tuple]) -> list[Outcome]:
        return local.check_many(checks)


_down_until = 0.0
_counters: dict[int, RedisCounters] = {}  # per client: the script object is built once
_LOCAL = _Local()


def for_route(settings: "RouteLimits", policy) -> "_Local | _Redis":
    if settings.strategy == "local":
        return _LOCAL
    return _Redis(policy.gateway.state.redis, settings.fault_tolerant)
