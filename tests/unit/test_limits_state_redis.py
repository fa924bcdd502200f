"""The Redis session store against a real server (valkey-server / redis-server): the same
semantics as the in-memory store, and nothing secret in its keys."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from mcpgw.state.redis_sessions import RedisSessionStore
from mcpgw.state.settings import RedisSettings
from tests.support.redis_server import redis_server


@pytest.fixture(scope="module")
def server():
    with redis_server() as s:
        yield s


@pytest.fixture
async def store(server):
    client = aioredis.Redis(host=server.host, port=server.port)
    await client.flushdb()
    yield RedisSessionStore(RedisSettings(host=server.host, port=server.port), client), client
    await client.aclose()


async def test_bind_owner_touch_end(store):
    s, _ = store
    assert await s.bind("r", "sess-1", "alice", 60) == "alice"
    assert await s.bind("r", "sess-1", "alice", 60) == "alice"  # rebinding to the owner is fine
    assert await s.bind("r", "sess-1", "mallory", 60) == "alice"  # someone else's: the owner is answered
    assert await s.owner("r", "sess-1") == "alice"
    assert await s.owner("other-route", "sess-1") is None
    await s.end("r", "sess-1")
    assert await s.owner("r", "sess-1") is None
    assert await s.bind("r", "sess-1", "mallory", 60) == "mallory"  # ended: free again


async def test_idle_ttl_and_touch(store):
    """No wall-clock margin decides this: a touch gives a minute of slack where it must keep the
    binding, and expiry is waited for with a generous deadline."""
    s, _ = store
    await s.bind("r", "sess-2", "alice", 1)
    await s.touch("r", "sess-2", 60)  # restarts the idle clock, with the touch's TTL
    await asyncio.sleep(1.5)  # past the bind's TTL
    assert await s.owner("r", "sess-2") == "alice"
    await s.touch("r", "sess-2", 1)
    deadline = asyncio.get_running_loop().time() + 20
    while await s.owner("r", "sess-2") is not None:
        assert asyncio.get_running_loop().time() < deadline, "the binding never expired"
        await asyncio.sleep(0.1)
    await s.touch("r", "sess-2", 60)  # touching an expired session does not revive it
    assert await s.owner("r", "sess-2") is None


async def test_keys_hold_no_session_id(store):
    s, client = store
    await s.bind("r", "very-secret-session-id", "alice", 60)
    keys = [k.decode() for k in await client.keys("*")]
    assert len(keys) == 1 and "very-secret-session-id" not in keys[0] and keys[0].startswith("mcpgw:sess:{")


async def test_an_unreachable_redis_raises_so_the_gateway_fails_closed(server):
    s = RedisSessionStore(RedisSettings(host="127.0.0.1", port=1, timeout=0.5),
                          aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5))
    with pytest.raises(Exception):
        await s.owner("r", "sess")


async def test_a_binding_written_a_moment_later_is_still_found(store):
    """Another instance writes the binding while its answer travels: a lookup that arrives first
    looks again shortly before calling the session unknown."""
    s, _ = store

    async def bind_soon():
        await asyncio.sleep(0.01)
        await s.bind("r", "fresh", "alice", 60)

    task = asyncio.create_task(bind_soon())
    assert await s.owner("r", "fresh") == "alice"
    await task
    assert await s.owner("r", "never-issued") is None
