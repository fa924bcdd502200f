"""Window semantics of the rate-limit counters, with a controlled clock: the local counters and
the Redis ones against a real server (valkey-server / redis-server started for the module)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from mcpgw.limits.counters import LocalCounters, Window
from mcpgw.limits.redis_counters import RedisCounters
from tests.support.redis_server import redis_server


class Clock:
    def __init__(self, now: float = 1_080_000.0):  # a multiple of 60 and 3600: windows start here
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def server():
    with redis_server() as s:
        yield s


class _Sync:
    """The two strategies behind one awaitable interface."""

    def __init__(self, kind: str, clock: Clock, server=None):
        self.kind = kind
        self.clock = clock
        if kind == "local":
            self.counters = LocalCounters(clock)
        else:
            self.client = aioredis.Redis(host=server.host, port=server.port)
            self.counters = RedisCounters(self.client, "test", clock)

    async def check(self, key, windows, cost=1, sliding=False, penalty=False):
        result = self.counters.check(key, windows, cost, sliding, penalty)
        return await result if self.kind == "redis" else result

    async def check_many(self, checks):
        result = self.counters.check_many(checks)
        return await result if self.kind == "redis" else result


@pytest.fixture(params=["local", "redis"])
async def counters(request, server):
    clock = Clock()
    c = _Sync(request.param, clock, server if request.param == "redis" else None)
    if request.param == "redis":
        await c.client.flushdb()
    yield c
    if request.param == "redis":
        await c.client.aclose()


async def test_fixed_window_allows_the_limit_then_refuses_until_the_next_window(counters):
    w = (Window(3, 60),)
    results = [await counters.check("k", w) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.windows[0].remaining for r in results] == [2, 1, 0, 0]
    assert results[-1].retry_after == 60
    counters.clock.now += 59.5
    refused = await counters.check("k", w)
    assert not refused.allowed and refused.retry_after == 1
    counters.clock.now += 0.5  # the next fixed window: a fresh count
    assert (await counters.check("k", w)).allowed


async def test_a_refused_request_is_not_counted(counters):
    w = (Window(2, 60),)
    for _ in range(10):
        await counters.check("k", w)
    counters.clock.now += 60
    assert [(await counters.check("k", w)).allowed for _ in range(3)] == [True, True, False]


async def test_keys_and_windows_are_independent(counters):
    w = (Window(1, 60),)
    assert (await counters.check("a", w)).allowed
    assert not (await counters.check("a", w)).allowed
    assert (await counters.check("b", w)).allowed


async def test_every_window_must_have_room_and_only_then_all_are_charged(counters):
    w = (Window(2, 1), Window(3, 60))
    assert (await counters.check("k", w)).allowed
    assert (await counters.check("k", w)).allowed
    second_full = await counters.check("k", w)
    assert not second_full.allowed and second_full.retry_after == 1
    counters.clock.now += 1
    third = await counters.check("k", w)
    assert third.allowed and third.windows[1].remaining == 0  # the refused one was charged nowhere
    counters.clock.now += 1
    assert not (await counters.check("k", w)).allowed  # the minute is full


async def test_sliding_window_weights_the_previous_window(counters):
    w = (Window(10, 60),)
    for _ in range(10):
        assert (await counters.check("k", w, sliding=True)).allowed
    counters.clock.now += 60  # the next window starts: the previous 10 weigh fully
    assert not (await counters.check("k", w, sliding=True)).allowed
    counters.clock.now += 30  # half the previous window is still inside the last minute: 5 used
    results = [await counters.check("k", w, sliding=True) for _ in range(6)]
    assert [r.allowed for r in results] == [True] * 5 + [False]
    # 5 current + 10 * (24/60 still inside) = 9 at 36 s: one more fits
    counters.clock.now += 6
    assert (await counters.check("k", w, sliding=True)).allowed
    assert not (await counters.check("k", w, sliding=True)).allowed


async def test_sliding_window_forgets_a_window_older_than_the_previous_one(counters):
    w = (Window(2, 60),)
    await counters.check("k", w, sliding=True)
    await counters.check("k", w, sliding=True)
    counters.clock.now += 120
    assert [(await counters.check("k", w, sliding=True)).allowed for _ in range(3)] == [True, True, False]


async def test_sliding_retry_after_is_when_the_request_fits(counters):
    w = (Window(10, 60),)
    for _ in range(10):
        await counters.check("k", w, sliding=True)
    counters.clock.now += 60
    refused = await counters.check("k", w, sliding=True)
    assert not refused.allowed and refused.retry_after == 6  # 10 * (54/60) + 1 <= 10 at 6 s
    counters.clock.now += refused.retry_after
    assert (await counters.check("k", w, sliding=True)).allowed


async def test_cost_counts_several_messages_at_once(counters):
    w = (Window(5, 60),)
    assert (await counters.check("k", w, cost=3)).allowed
    assert not (await counters.check("k", w, cost=3)).allowed
    assert (await counters.check("k", w, cost=2)).allowed


async def test_limit_zero_refuses_everything(counters):
    assert not (await counters.check("k", (Window(0, 60),))).allowed


async def test_local_counters_stay_bounded():
    clock = Clock()
    c = LocalCounters(clock, capacity=100)
    for i in range(1000):
        c.check(f"k{i}", (Window(1, 60),), 1, False)
        clock.now += 1
    assert len(c) <= 101


async def test_a_flood_of_new_keys_sweeps_rarely():
    clock = Clock()
    c = LocalCounters(clock, capacity=1000)
    sweeps = 0
    original = c._sweep

    def counting(now):
        nonlocal sweeps
        sweeps += 1
        original(now)

    c._sweep = counting
    for i in range(5000):  # all live: same window
        c.check(f"k{i}", (Window(1, 3600),), 1, False)
    assert len(c) <= 1000 and sweeps <= 50  # one per 100 new keys, not one per key


async def test_redis_keys_carry_one_hash_tag_and_expire(server):
    clock = Clock()
    client = aioredis.Redis(host=server.host, port=server.port)
    await client.flushdb()
    counters = RedisCounters(client, "pfx", clock)
    await counters.check("r:x:{evil}", (Window(5, 60), Window(50, 3600)), 1, True)
    keys = sorted(k.decode() for k in await client.keys("*"))
    assert keys == [f"pfx:rl:{{r:x:(evil)}}:3600:{int(clock.now)}", f"pfx:rl:{{r:x:(evil)}}:60:{int(clock.now)}"]
    assert 0 < await client.ttl(keys[1]) <= 120
    await client.aclose()


async def test_penalty_counts_refused_requests_too(counters):
    w = (Window(2, 60),)
    results = [await counters.check("k", w, sliding=True, penalty=True) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, False, False]
    counters.clock.now += 90  # half the previous window still weighs: 4 * 0.5 = 2, no room yet
    assert not (await counters.check("k", w, sliding=True, penalty=True)).allowed
    without = [await counters.check("other", w, sliding=True) for _ in range(4)]
    counters.clock.now += 90  # the same calls without the penalty: 2 * 0.5 = 1, room for one
    assert [r.allowed for r in without] == [True, True, False, False]
    assert (await counters.check("other", w, sliding=True)).allowed


async def test_several_counters_in_one_call_are_each_decided_on_their_own(counters):
    """check_many (one Redis round trip for every rule of a phase): each counter passes or is
    refused as a check of its own would, and only those with room are charged."""
    one, three = (Window(1, 60),), (Window(3, 60),)
    assert (await counters.check("full", one)).allowed
    results = await counters.check_many([("full", one, 1, False, False), ("room", three, 2, True, False),
                                         ("room2", three, 5, False, False)])
    assert [r.allowed for r in results] == [False, True, False]
    assert results[1].windows[0].remaining == 1 and results[0].retry_after == 60
    assert [r.allowed for r in await counters.check_many([("room", three, 1, True, False)])] == [True]
    assert not (await counters.check("room", three, 1, True)).allowed  # 2 + 1 charged: the window is full
    assert (await counters.check("room2", three, 3)).allowed  # the refused 5 cost nothing
    asked = await counters.check_many([("ask", three, 1, False, False, False), ("ask2", three, 1, False, False, False)])
    assert [r.allowed for r in asked] == [True, True] and asked[0].windows[0].remaining == 3  # only asked:
    assert (await counters.check("ask", three, 3)).allowed  # nothing was charged
