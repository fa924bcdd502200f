"""Trust-on-first-use pins shared by several gateway processes through Redis (or Valkey), when
the policy's `gateway.state.backend` is `redis`.

`PinStore` is synchronous (pins are read from the message layer's transforms), so this store is
a memory front with Redis behind:

- before a request on the route is judged, the async phase `integrity.sync_pins` calls `sync`:
  one GET of the route's version key, and, only when another process (or an operator) changed
  its pins since, one HGETALL into the front. An answer is judged against pins at most one
  request old.
- a pin learned here is written at the end of its list answer (`flush`, one script call per
  route): HSETNX, so the first process to pin a tool wins everywhere; a process that lost the
  race takes the winner's pin, and the tool it showed is judged against that from then on.
  A write that fails (Redis down) keeps the pins here and is retried with the next list.

Keys (a {hash tag} per route, so that Redis Cluster keeps both on one slot):
`<prefix>:pins:{<digest of route>}` a hash tool -> pin JSON, and `...:v`, a counter raised with
every change. To accept a changed tool, remove its pin and raise the counter:
`HDEL <hash> <tool>` then `INCR <hash>:v`. A Redis error in `sync` propagates: the request is
refused (the gateway's hooks fail closed), never judged against pins that could not be read."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

from . import redis_client
from .pins import MemoryPinStore, Pin

log = logging.getLogger("mcpgw.state.pins")

# KEYS[1]: the route's hash, KEYS[2]: its version. ARGV: tool, pin, tool, pin, ...
# Returns the pins that were already taken, as tool, pin, ...
_PIN = """
local added, taken = 0, {}
for i = 1, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    added = added + 1
  else
    taken[#taken + 1] = ARGV[i]
    taken[#taken + 1] = redis.call('HGET', KEYS[1], ARGV[i])
  end
end
if added > 0 then redis.call('INCR', KEYS[2]) end
return taken
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisPinStore(MemoryPinStore):
    def __init__(self, settings, client: Any = None):
        super().__init__({})
        self._pending = {}
        self.settings = settings
        self._client = client
        self._loaded: dict[str, Any] = {}  # route -> the version value its pins were loaded at
        self._writes: set[asyncio.Task] = set()

    def keys(self, route: str) -> tuple[str, str]:
        digest = hashlib.sha256(route.encode()).hexdigest()[:32]
        base = f"{self.settings.key_prefix}:pins:{{{digest}}}"
        return base, base + ":v"

    def _redis(self):
        return self._client or redis_client.client(self.settings)

    async def sync(self, route: str) -> None:
        """Load the route's pins if they changed since they were last loaded."""
        client = self._redis()
        pins_key, version_key = self.keys(route)
        version = await client.get(version_key)
        if route in self._loaded and self._loaded[route] == version:
            return
        stored = await client.hgetall(pins_key)
        pins = {_text(name): json.loads(pin) for name, pin in stored.items()}
        with self._lock:
            self._replace({route: pins}, (route,))
            self._loaded[route] = version

    def flush(self) -> None:
        if not self._pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a command-line tool): the pins stay pending here
            return
        with self._lock:
            pending, self._pending = self._pending, {}
        task = loop.create_task(self._write(pending))
        self._writes.add(task)  # a reference, so the task is not collected before it ran
        task.add_done_callback(self._writes.discard)

    async def _write(self, pending: dict[str, dict[str, Pin]]) -> None:
        for route, tools in pending.items():
            args = [x for name, pin in tools.items() for x in (name, json.dumps(pin, sort_keys=True))]
            try:
                taken = await self._redis().eval(_PIN, 2, *self.keys(route), *args)
            except Exception as e:  # Redis down: keep them here, written with the next list (they hold tools here meanwhile)
                log.error("route %s: could not write %d pin(s) to Redis (%s); retrying with the next list",
                          route, len(tools), e)
                with self._lock:
                    for name, pin in tools.items():
                        self._pending.setdefault(route, {}).setdefault(name, pin)
                continue
            winners = {_text(taken[i]): json.loads(taken[i + 1]) for i in range(0, len(taken), 2)}
            with self._lock:
                for name, pin in winners.items():  # another process pinned these first: its pins count
                    if self._pins.get(route, {}).get(name) != pin:
                        self._pins.setdefault(route, {})[name] = pin
                        self._version += 1

    async def drain(self) -> None:
        """Wait for the writes under way (tests, shutdown)."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)
