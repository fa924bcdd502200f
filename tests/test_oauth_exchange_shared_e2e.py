"""Exchanged tokens shared between gateway processes (gateway.state.backend: redis) and kept across
a script reload: real mitmdumps, one real Redis-protocol server (tests/support/redis_server.py),
the test authorization server's token-exchange grant and the demo upstream.

A caller's token exchanged through one gateway is not exchanged again by the other, and Redis
holds neither token in clear; a value moved under another caller's key opens for nobody (that
caller gets an exchange of its own); Redis down: every request is still exchanged and
answered, nothing is forwarded unexchanged."""

from __future__ import annotations

import os
import shutil
import time

import httpx
import pytest

from tests.support.gateway import ROOT, Gateway
from tests.support.redis_server import RedisServer
from tests.test_oauth_exchange_e2e import payload, post_initialize

pytestmark = pytest.mark.e2e

AUDIENCE = "https://github-mcp.internal/mcp"


def policy(upstream, auth, redis: RedisServer | None) -> dict:
    client_id, client_secret = auth.introspection_client
    exchange = {"token_endpoint": auth.token_url, "client_id": client_id, "client_secret": client_secret,
                "request": {"resource": AUDIENCE}}
    state = {"state": {"backend": "redis", "redis": {**redis.policy, "timeout": 0.5}}} if redis else {}
    return {
        "gateway": state,
        "services": {"gh": {"url": upstream.url}},
        "routes": {"gh": {"service": "gh", "paths": ["/gh"], "oauth": {
            # the resource both gateways stand for (they listen on different ports)
            "resource": "https://gateway.example/gh", "authorization_servers": [auth.url],
            "jwks_endpoint": auth.jwks_url, "token_exchange": exchange}}},
    }


@pytest.fixture(scope="module")
def redis():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateways(workdir, upstream, auth, redis):
    started = []
    try:
        for name in ("a", "b"):
            started.append(Gateway(workdir, policy(upstream, auth, redis), intercept=False, name=f"gw-{name}"))
        yield started
    finally:
        for gw in started:
            gw.stop()


async def initialize(gw: Gateway, token: str) -> httpx.Response:
    return await post_initialize(gw.url("/gh"), token)


def sent_tokens(upstream) -> list[str]:
    return [r["headers"].get("authorization", "").removeprefix("Bearer ") for r in upstream.requests()]


def resp_items(raw: bytes) -> list[bytes]:
    """The bulk strings of a RESP array answer (KEYS)."""
    lines = raw.split(b"\r\n")
    return [lines[i + 1] for i, line in enumerate(lines) if line.startswith(b"$") and line != b"$-1"]


def exchange_keys(redis: RedisServer) -> list[str]:
    return sorted(k.decode() for k in resp_items(redis.command("KEYS", "mcpgw:exchange:*")))


async def test_a_token_exchanged_by_one_gateway_is_reused_by_the_other(gateways, upstream, auth, redis):
    a, b = gateways
    token = auth.mint("alice", aud="https://gateway.example/gh")
    before = auth.exchange_calls
    upstream.reset()
    assert (await initialize(a, token)).status_code == 200
    assert auth.exchange_calls - before == 1
    keys = exchange_keys(redis)
    assert len(keys) == 1
    assert (await initialize(b, token)).status_code == 200
    assert auth.exchange_calls - before == 1  # b found a's exchange in Redis
    first, second = sent_tokens(upstream)
    assert first == second and first != token and payload(first)["sub"] == "alice" and payload(first)["aud"] == AUDIENCE
    # what Redis holds: a digest as the name, a sealed value; neither token, nor any part of them
    stored = redis.command("GET", keys[0])
    for secret in (token, first):
        for part in secret.split("."):
            assert part.encode() not in stored and part not in keys[0]
    ttl = int(redis.command("TTL", keys[0]).strip(b":\r\n"))
    assert 0 < ttl <= auth.exchange_lifetime - 30  # the exchanged token's expires_in less the margin
    for gw in (a, b):
        assert token not in gw.log() and first not in gw.log()


async def test_a_value_moved_under_another_callers_key_opens_for_nobody(gateways, upstream, auth, redis):
    a, b = gateways
    victim = auth.mint("victim", aud="https://gateway.example/gh")
    attacker = auth.mint("attacker", aud="https://gateway.example/gh")
    known = set(exchange_keys(redis))
    assert (await initialize(a, victim)).status_code == 200
    (victim_key,) = set(exchange_keys(redis)) - known
    assert (await initialize(a, attacker)).status_code == 200
    (attacker_key,) = set(exchange_keys(redis)) - known - {victim_key}
    # someone with write access to Redis copies the victim's entry under the attacker's key
    assert redis.command("COPY", victim_key, attacker_key, "REPLACE").startswith(b":1")
    before = auth.exchange_calls
    upstream.reset()
    assert (await initialize(b, attacker)).status_code == 200  # b has not seen the attacker's token
    assert auth.exchange_calls - before == 1  # the moved value did not open: exchanged afresh
    (sent,) = sent_tokens(upstream)
    assert payload(sent)["sub"] == "attacker"
    assert "does not open under its key" in b.log()


async def test_redis_down_every_request_is_still_exchanged(gateways, upstream, auth, redis):
    a, b = gateways
    redis.stop()
    try:
        token = auth.mint("during-outage", aud="https://gateway.example/gh")
        before = auth.exchange_calls
        upstream.reset()
        for gw in (a, b):
            response = await initialize(gw, token)
            assert response.status_code == 200
        assert auth.exchange_calls - before == 2  # nothing shared: each gateway exchanged for itself
        assert all(payload(t)["sub"] == "during-outage" and t != token for t in sent_tokens(upstream))
        assert "exchanging without it" in a.log()
    finally:
        redis.start()


async def test_exchanged_tokens_survive_a_script_reload(tmp_path, upstream, auth):
    shutil.copytree(ROOT / "addons", tmp_path / "addons", ignore=shutil.ignore_patterns("__pycache__"))
    entry = tmp_path / "addons" / "mcp_gateway.py"
    gw = Gateway(tmp_path, policy(upstream, auth, None), intercept=False, entry=entry)
    try:
        token = auth.mint("reloaded", aud="https://gateway.example/gh")
        before = auth.exchange_calls
        upstream.reset()
        assert (await initialize(gw, token)).status_code == 200
        stamp = time.time() + 2
        os.utime(entry, (stamp, stamp))  # mitmproxy re-imports the script and the gateway's package
        gw.process.wait_for(r"Loading script", count=2)
        gw.process.wait_for(r"policy version \d+ loaded", count=2)
        assert (await initialize(gw, token)).status_code == 200
        assert auth.exchange_calls - before == 1  # the reloaded code found the exchanged token
        first, second = sent_tokens(upstream)
        assert first == second != token
    finally:
        gw.stop()
