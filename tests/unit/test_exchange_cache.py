"""The exchanged-token cache shared through Redis (state/exchange_cache.py) against a real
Redis-protocol server: sealed values, names that are digests, expiry carried along, and a Redis
that fails or holds something foreign never yielding a token."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from mcpgw.identity.exchange import Exchanger
from mcpgw.identity.exchange_settings import TokenExchangeConfig
from mcpgw.state import redis_client
from mcpgw.state.exchange_cache import CacheKey, SelectedExchangeCache, seal, unseal
from mcpgw.state.settings import StateSettings
from mcpgw.state.tokens import MemoryTokenCache
from tests.support.redis_server import redis_server


@pytest.fixture(scope="module")
def server():
    with redis_server() as s:
        yield s


def policy_for(server) -> SimpleNamespace:
    state = StateSettings(backend="redis", redis={**server.policy, "timeout": 0.5})
    return SimpleNamespace(gateway=SimpleNamespace(state=state))


@pytest.fixture
async def caches(server):
    policy = policy_for(server)
    yield (SelectedExchangeCache(MemoryTokenCache(), lambda: policy),
           SelectedExchangeCache(MemoryTokenCache(), lambda: policy))
    await redis_client.close_all()


def key_of(subject: str, settings: dict | None = None) -> CacheKey:
    config = TokenExchangeConfig(token_endpoint="https://idp.example/token", client_auth="none", client_id="gw",
                                 **(settings or {}))
    return Exchanger(config, "gw", None, "none", verify=True, timeout=5).cache_key(subject, None)


def test_seal_opens_only_under_its_key_and_name():
    key, other = key_of("subject-token-1"), key_of("subject-token-2")
    raw = seal(key, "p:exchange:{a}", "the-token", 123.0)
    assert b"the-token" not in raw
    assert unseal(key, "p:exchange:{a}", raw) == (123.0, "the-token")
    assert unseal(other, "p:exchange:{a}", raw) is None  # another caller's key
    assert unseal(key, "p:exchange:{b}", raw) is None  # moved under another name
    assert unseal(key, "p:exchange:{a}", raw[:-1] + bytes([raw[-1] ^ 1])) is None  # altered
    assert unseal(key, "p:exchange:{a}", b"short") is None


def test_keys_differ_by_token_and_settings_and_hold_neither():
    a, b = key_of("token-a"), key_of("token-b")
    assert a.name != b.name and a.secret != b.secret
    assert key_of("token-a", {"request": {"audience": ["x"]}}).name != a.name
    assert key_of("token-a") == a  # the same token and settings: the same entry
    assert "token-a" not in a.name and bytes.fromhex(a.name) != a.secret


async def test_one_process_puts_another_gets(caches, server):
    first, second = caches
    key = key_of("shared-token")
    await first.put(key, "exchanged-value", time.time() + 60)
    assert await second.get(key) == "exchanged-value"
    stored_as = f"mcpgw:exchange:{{{key.name}}}"
    assert b"exchanged-value" not in server.command("GET", stored_as)
    ttl = int(server.command("TTL", stored_as).strip(b":\r\n"))
    assert 0 < ttl <= 60


async def test_an_expired_or_missing_entry_is_none(caches):
    first, second = caches
    key = key_of("short-lived")
    await first.put(key, "gone", time.time() - 1)  # already expired: nothing is kept
    assert await first.get(key) is None and await second.get(key) is None


async def test_a_foreign_value_is_ignored(caches, server):
    _, second = caches
    key = key_of("forged")
    server.command("SET", f"mcpgw:exchange:{{{key.name}}}", "not-sealed")
    assert await second.get(key) is None


async def test_redis_down_the_cache_misses_and_writes_are_dropped():
    dead = SimpleNamespace(gateway=SimpleNamespace(state=StateSettings(
        backend="redis", redis={"host": "127.0.0.1", "port": 9, "timeout": 0.5})))
    cache = SelectedExchangeCache(MemoryTokenCache(), lambda: dead)
    key = key_of("during-outage")
    try:
        assert await cache.get(key) is None
        await cache.put(key, "kept-here", time.time() + 60)  # kept in this process all the same
        assert await cache.get(key) == "kept-here"
    finally:
        await redis_client.close_all()


async def test_memory_backend_never_asks_redis():
    cache = SelectedExchangeCache(MemoryTokenCache(), lambda: None)
    key = key_of("memory-only")
    await cache.put(key, "local", time.time() + 60)
    assert await cache.get(key) == "local"
