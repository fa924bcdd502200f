"""Kong's rate-limit response headers, from the windows' state after a check.

RateLimit-Limit / -Remaining / -Reset describe the window closest to refusing (the lowest
remaining); X-RateLimit-Limit-<window> and X-RateLimit-Remaining-<window> describe each window,
named Second, Minute, Hour, Day, Month, Year or by its length in seconds. When several rules
share a window length the most restrictive one is shown."""

from __future__ import annotations

from collections.abc import Iterable

from .counters import Outcome, WindowState

NAMES = {1: "Second", 60: "Minute", 3600: "Hour", 86400: "Day", 2592000: "Month", 31536000: "Year"}


def window_name(size: int) -> str:
    return NAMES.get(size, str(size))


def client_headers(results: Iterable[tuple[object, Outcome]]) -> dict[str, str]:
    tightest: WindowState | None = None
    per_size: dict[int, WindowState] = {}
    for _, result in results:
        for state in result.windows:
            size = state.window.size
            if size not in per_size or state.remaining < per_size[size].remaining:
                per_size[size] = state
            if tightest is None or (state.remaining, -state.reset) < (tightest.remaining, -tightest.reset):
                tightest = state
    if tightest is None:
        return {}
    headers = {"RateLimit-Limit": str(tightest.window.limit), "RateLimit-Remaining": str(tightest.remaining),
               "RateLimit-Reset": str(tightest.reset)}
    for size in sorted(per_size):
        state = per_size[size]
        headers[f"X-RateLimit-Limit-{window_name(size)}"] = str(state.window.limit)
        headers[f"X-RateLimit-Remaining-{window_name(size)}"] = str(state.remaining)
    return headers
