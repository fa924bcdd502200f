"""Session bindings in Redis, for several gateway processes behind one load balancer: a session
opened through one is honoured for its owner, and refused for anyone else, by all.

Keys are `<prefix>:sess:{<digest>}` with the digest of route and session id: a session id is
a bearer value (whoever holds it continues the session), so it is never written in clear.
Values are the owner's caller key; the idle TTL is the key's expiry. A Redis error propagates:
the gateway's hooks fail closed (the request is refused), never let an unchecked session pass.

`SelectedSessionStore` is what the session phases use: the store the active policy's
`gateway.state.backend` names, this process's memory or Redis, looked up per call so that a
policy reload switches backends without restarting."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, Callable

from . import redis_client
from .sessions import SessionStore

BIND_GRACE = 0.05  # seconds an unknown session is looked up again after

# KEYS[1]: the binding; ARGV: owner, ttl in ms. Returns the owner bound now.
_BIND = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return current end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""


class RedisSessionStore:
    def __init__(self, settings, client: Any = None):
        self.settings = settings
        self._client = client
        self._scripts: dict[int, Any] = {}

    def _redis(self):
        client = self._client or redis_client.client(self.settings)
        script = self._scripts.get(id(client))
        if script is None or script.registered_client is not client:
            script = self._scripts[id(client)] = client.register_script(_BIND)
        return client, script

    def key(self, route: str, session: str) -> str:
        digest = hashlib.sha256(f"{route}\0{session}".encode()).hexdigest()[:32]
        return f"{self.settings.key_prefix}:sess:{{{digest}}}"

    async def bind(self, route: str, session: str, owner: str, ttl: float) -> str:
        client, script = self._redis()
        found = await script(keys=[self.key(route, session)], args=[owner, max(1, int(ttl * 1000))])
        return found.decode() if isinstance(found, bytes) else found

    async def owner(self, route: str, session: str) -> str | None:
        client, _ = self._redis()
        key = self.key(route, session)
        found = await client.get(key)
        if found is None:
            # The instance that saw the session issued writes its binding while the answer goes out
            # (the response hooks do not wait for it); a client fast enough to reach another
            # instance first would be refused. Ask once more after a moment: only unknown sessions
            # (expired ones, guesses) pay the wait.
            await asyncio.sleep(BIND_GRACE)
            found = await client.get(key)
        return found.decode() if isinstance(found, bytes) else found

    async def touch(self, route: str, session: str, ttl: float) -> None:
        client, _ = self._redis()
        await client.pexpire(self.key(route, session), max(1, int(ttl * 1000)))  # no-op for a missing key

    async def end(self, route: str, session: str) -> None:
        client, _ = self._redis()
        await client.delete(self.key(route, session))


class SelectedSessionStore:
    """Memory or Redis, as the active policy says."""

    def __init__(self, memory: SessionStore, policy: Callable[[], Any]):
        self.memory = memory
        self._policy = policy  # () -> the active Policy or None
        self._redis: dict[tuple, RedisSessionStore] = {}

    def _store(self) -> SessionStore:
        policy = self._policy()
        state = policy.gateway.state if policy is not None else None
        if state is None or state.backend != "redis":
            return self.memory
        s = state.redis
        key = (s.host, s.port, s.database, s.key_prefix)
        found = self._redis.get(key)
        if found is None or found.settings != s:
            found = self._redis[key] = RedisSessionStore(s)
        return found

    def bind(self, route: str, session: str, owner: str, ttl: float):
        return self._store().bind(route, session, owner, ttl)

    def owner(self, route: str, session: str):
        return self._store().owner(route, session)

    def touch(self, route: str, session: str, ttl: float):
        return self._store().touch(route, session, ttl)

    def end(self, route: str, session: str):
        return self._store().end(route, session)
