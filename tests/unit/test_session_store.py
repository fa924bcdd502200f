"""The in-memory session store (state/sessions.py) and run_now, which lets synchronous hooks use
any store."""

import asyncio

import pytest

from mcpgw.state import MemorySessionStore, run_now


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_bind_owner_touch_end():
    store = MemorySessionStore()
    assert await store.owner("r", "s1") is None
    assert await store.bind("r", "s1", "alice", 60) == "alice"
    assert await store.owner("r", "s1") == "alice"
    assert await store.owner("other-route", "s1") is None  # keyed by route and session
    await store.touch("r", "s1", 60)
    await store.end("r", "s1")
    assert await store.owner("r", "s1") is None
    await store.end("r", "never-bound")  # no error


async def test_a_bound_session_keeps_its_first_owner():
    store = MemorySessionStore()
    await store.bind("r", "s1", "alice", 60)
    assert await store.bind("r", "s1", "mallory", 60) == "alice"
    assert await store.owner("r", "s1") == "alice"
    assert await store.bind("r", "s1", "alice", 60) == "alice"  # the owner again: fine


async def test_idle_sessions_expire_and_touch_restarts_the_clock():
    clock = Clock()
    store = MemorySessionStore(clock=clock)
    await store.bind("r", "s1", "alice", 10)
    clock.now += 8
    await store.touch("r", "s1", 10)
    clock.now += 8
    assert await store.owner("r", "s1") == "alice"  # 16 s after binding, 8 after the touch
    clock.now += 3
    assert await store.owner("r", "s1") is None
    await store.touch("r", "s1", 10)  # touching an expired session does not revive it
    assert await store.owner("r", "s1") is None
    assert await store.bind("r", "s1", "mallory", 10) == "mallory"  # expired: free again


async def test_capacity_drops_the_least_recently_used_and_expired_entries_go_first():
    clock = Clock()
    store = MemorySessionStore(capacity=3, clock=clock)
    for i in range(3):
        await store.bind("r", f"s{i}", "alice", 100)
    await store.touch("r", "s0", 100)  # s1 is now the least recently used
    await store.bind("r", "s3", "alice", 100)
    assert [await store.owner("r", f"s{i}") for i in range(4)] == ["alice", None, "alice", "alice"]
    clock.now += 200
    await store.bind("r", "s4", "bob", 100)
    assert len(store) == 1  # the expired ones were swept


async def test_run_now_finishes_a_store_call_that_never_waits():
    store = MemorySessionStore()
    assert run_now(store.bind("r", "s1", "alice", 60)) == (True, "alice")
    assert run_now(store.owner("r", "s1")) == (True, "alice")


async def test_run_now_hands_a_waiting_call_to_the_loop():
    done = asyncio.Event()

    async def slow() -> str:
        await asyncio.sleep(0.01)
        done.set()
        return "later"

    assert run_now(slow()) == (False, None)
    await asyncio.wait_for(done.wait(), 5)


def test_run_now_without_an_event_loop():
    store = MemorySessionStore()
    assert run_now(store.bind("r", "s1", "alice", 60)) == (True, "alice")

    async def slow() -> None:
        await asyncio.sleep(0.01)

    with pytest.raises(RuntimeError, match="running event loop"):
        run_now(slow())
