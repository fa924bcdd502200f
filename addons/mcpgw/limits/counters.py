"""Window counters: the arithmetic both strategies share, and the in-process (local) store.

A check names one counter key and its windows (limit, size). It passes when every window has
room for `cost` more; only then is every window charged (a refused request costs nothing, so a
caller hammering a closed window does not keep it closed), unless `penalty` says refused
requests count too (Kong rate-limiting-advanced's default, disable_penalty: false).

fixed: the window is [floor(now/size)*size, +size); usage = this window's count.
sliding (Kong's default): usage = this window's count + the previous window's count weighted by
the part of the previous window still inside the last `size` seconds. It assumes the previous
window's requests were spread evenly (the approximation Kong and Cloudflare make); it never
allows more than twice the limit in any `size` seconds and exactly the limit at steady rates."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Window:
    limit: int
    size: int


@dataclass(frozen=True, slots=True)
class WindowState:
    window: Window
    remaining: int  # after this request, if it passed
    reset: int  # seconds until this window's usage next drops (at least 1)


@dataclass(frozen=True, slots=True)
class Outcome:
    allowed: bool
    windows: tuple[WindowState, ...]
    retry_after: int = 0  # when refused: seconds until every full window has room again


def weight(now: float, size: int) -> float:
    """The share of the previous fixed window still inside the sliding window ending at `now`."""
    return (size - (now % size)) / size


def usage(current: int, previous: int, now: float, size: int, sliding: bool) -> float:
    return current + previous * weight(now, size) if sliding else float(current)


def outcome(windows: Sequence[Window], counts: Sequence[tuple[int, int]], allowed: bool, cost: int, now: float,
            sliding: bool, charged: bool = True) -> Outcome:
    """The answer to a check from each window's (current, previous) counts before it; `remaining`
    is what is left after it, or, for a check that only asked (`charged=False`), before it."""
    states = []
    retry = 0
    for w, (current, previous) in zip(windows, counts):
        used = usage(current, previous, now, w.size, sliding)
        remaining = max(0, math.floor(w.limit - (used + cost if allowed and charged else used)))
        reset = max(1, math.ceil(w.size - now % w.size))
        states.append(WindowState(w, remaining, reset))
        if not allowed and used + cost > w.limit:
            retry = max(retry, _retry(w, current, previous, cost, now, sliding, reset))
    return Outcome(allowed, tuple(states), retry)


def _retry(w: Window, current: int, previous: int, cost: int, now: float, sliding: bool, reset: int) -> int:
    """Seconds until a request of `cost` fits this window (counting no other request)."""
    if cost > w.limit:
        return w.size  # never fits; say "a window" rather than promise a time
    if not sliding:
        return reset
    elapsed = now % w.size
    room = w.limit - current - cost
    if room >= 0 and previous > 0:  # fits once the previous window's weight has decayed enough
        return max(1, math.ceil(w.size * (1 - room / previous) - elapsed))
    # the current count becomes the previous one, which then decays in the next window
    return max(1, math.ceil(reset + w.size * (1 - (w.limit - cost) / current)))


class LocalCounters:
    """One process's counters: key -> per window size (window start, count, previous count).
    Entries whose windows have all passed are swept when the table grows past `capacity`."""

    def __init__(self, clock: Callable[[], float] = time.time, capacity: int = 200_000):
        self.clock = clock
        self.capacity = capacity
        self._counts: dict[tuple[str, int], list[float]] = {}  # (key, size) -> [start, count, previous]

    def __len__(self) -> int:
        return len(self._counts)

    def _slot(self, key: str, size: int, now: float) -> list[float]:
        start = now - now % size
        slot = self._counts.get((key, size))
        if slot is None:
            slot = self._counts[(key, size)] = [start, 0, 0]
        elif slot[0] != start:  # a later window: the count becomes the previous one if adjacent
            slot[2] = slot[1] if slot[0] == start - size else 0
            slot[0], slot[1] = start, 0
        return slot

    def check(self, key: str, windows: Sequence[Window], cost: int, sliding: bool, penalty: bool = False,
              charge: bool = True) -> Outcome:
        """`charge=False` only asks (token limits, before the call); `penalty` charges even when refused."""
        now = self.clock()
        slots = [self._slot(key, w.size, now) for w in windows]
        counts = [(int(s[1]), int(s[2])) for s in slots]
        allowed = all(usage(c, p, now, w.size, sliding) + cost <= w.limit for (c, p), w in zip(counts, windows))
        if charge and (allowed or penalty):
            for s in slots:
                s[1] += cost
        if len(self._counts) > self.capacity:
            self._sweep(now)
        return outcome(windows, counts, allowed, cost, now, sliding, charge)

    def check_many(self, checks: Sequence[tuple]) -> list[Outcome]:
        """Several checks, each `(key, windows, cost, sliding, penalty[, charge])`, one after the other."""
        return [self.check(*c) for c in checks]

    def _sweep(self, now: float) -> None:
        """Down to 90% of capacity, so that a flood of new keys (callers named by a header, say)
        costs one sweep per 10% of capacity, not one per request."""
        stale = [k for k, s in self._counts.items() if s[0] + 2 * k[1] <= now]
        for k in stale:
            del self._counts[k]
        target = self.capacity * 9 // 10
        if len(self._counts) > target:  # live windows: the oldest go first (their callers regain room early)
            for k in sorted(self._counts, key=lambda k: self._counts[k][0])[: len(self._counts) - target]:
                del self._counts[k]
