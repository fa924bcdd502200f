"""Session bindings: which caller opened each MCP session, by route and session id.

`SessionStore` is the whole interface. Its methods are coroutines so that a shared store can do
I/O; the in-memory one never suspends, and `run_now` lets the gateway's synchronous hooks (the
response-headers hook, SSE stream callbacks) use either: an awaitable that completes at once is
finished on the spot, one that does I/O goes on as a task."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

log = logging.getLogger("mcpgw.state")

T = TypeVar("T")


class SessionStore(Protocol):
    async def bind(self, route: str, session: str, owner: str, ttl: float) -> str:
        """Bind an unbound (or expired) session to `owner`; return the owner it is bound to now,
        which is another one when the session was already someone else's."""

    async def owner(self, route: str, session: str) -> str | None:
        """The owner of a live session, or None (never bound, ended or idle past its TTL)."""

    async def touch(self, route: str, session: str, ttl: float) -> None:
        """Restart a live session's idle clock."""

    async def end(self, route: str, session: str) -> None:
        """Forget a session (no error if unknown)."""


class MemorySessionStore:
    """One process's bindings: at most `capacity`, least recently used dropped first; an entry
    idle past its TTL is gone when next looked at or when it reaches the front of the queue."""

    def __init__(self, capacity: int = 100_000, clock: Callable[[], float] = time.monotonic):
        self.capacity = capacity
        self._clock = clock
        self._items: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()  # -> (owner, expires)

    def __len__(self) -> int:
        return len(self._items)

    def _live(self, key: tuple[str, str]) -> tuple[str, float] | None:
        found = self._items.get(key)
        if found is not None and found[1] <= self._clock():
            del self._items[key]
            return None
        return found

    def _sweep(self) -> None:
        now = self._clock()
        items = self._items
        while items:
            key, (_, expires) = next(iter(items.items()))
            if expires > now and len(items) <= self.capacity:
                return
            del items[key]

    async def bind(self, route: str, session: str, owner: str, ttl: float) -> str:
        key = (route, session)
        found = self._live(key)
        if found is not None and found[0] != owner:
            return found[0]
        self._items[key] = (owner, self._clock() + ttl)
        self._items.move_to_end(key)
        self._sweep()
        return owner

    async def owner(self, route: str, session: str) -> str | None:
        found = self._live((route, session))
        return None if found is None else found[0]

    async def touch(self, route: str, session: str, ttl: float) -> None:
        key = (route, session)
        found = self._live(key)
        if found is not None:
            self._items[key] = (found[0], self._clock() + ttl)
            self._items.move_to_end(key)

    async def end(self, route: str, session: str) -> None:
        self._items.pop((route, session), None)


_pending: set[asyncio.Task] = set()  # store calls still waiting on I/O, referenced until done


def run_now(call: Coroutine[Any, Any, T]) -> tuple[bool, T | None]:
    """Run a store call from synchronous code: (True, result) when it completed without waiting
    (the in-memory store always does), else (False, None), the rest running as a task."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no event loop (unit tests, tools): only a store that never waits works here
        try:
            call.send(None)
        except StopIteration as done:
            return True, done.value
        call.close()
        raise RuntimeError("this session store needs a running event loop") from None
    task = asyncio.Task(call, loop=loop, eager_start=True)  # runs here, up to its first wait
    if task.done():
        return True, task.result()
    _pending.add(task)
    task.add_done_callback(_finished)
    return False, None


def _finished(task: asyncio.Task) -> None:
    _pending.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("session store operation failed", exc_info=task.exception())
