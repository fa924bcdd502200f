"""Tokens the gateway obtained for upstreams (RFC 8693 token exchange), by an opaque key.

`TokenCache` is the whole interface: a shared backend (Redis, for several replicas) can replace the
in-process one. Keys are digests the caller computes (subject, audience, ...), never a token; the
values are tokens, so a shared backend must be as private as the authorization server's answers."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol


class TokenCache(Protocol):
    async def get(self, key: str) -> str | None:
        """The token stored under `key`, or None when there is none or it has expired."""

    async def put(self, key: str, token: str, ttl: float) -> None:
        """Keep `token` under `key` for `ttl` seconds (nothing is kept when ttl <= 0)."""

    async def drop(self, key: str) -> None:
        """Forget `key` (no error if unknown)."""


class MemoryTokenCache:
    """One process's tokens: at most `capacity`, least recently used dropped first."""

    def __init__(self, capacity: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.capacity = capacity
        self._clock = clock
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()  # key -> (token, expires at)

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, key: str) -> str | None:
        found = self._items.get(key)
        if found is None:
            return None
        if found[1] <= self._clock():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return found[0]

    async def put(self, key: str, token: str, ttl: float) -> None:
        if ttl <= 0:
            return
        self._items[key] = (token, self._clock() + ttl)
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    async def drop(self, key: str) -> None:
        self._items.pop(key, None)
