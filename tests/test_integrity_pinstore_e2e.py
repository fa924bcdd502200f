"""Trust-on-first-use pins shared by two gateway processes through a real Redis-protocol server
(valkey-server from the test extra, or a system redis-server), end to end. The demo upstream
runs with --rug-pull: search_code's description changes after its first tools/list."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest
from mcp import McpError

from scripts.demo_github_tools import TOOL_NAMES
from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, jsonrpc, mcp_session
from tests.support.redis_server import RedisServer
from tests.test_integrity_pinfile_e2e import ARGS, CALL_TIMEOUT, TOFU, listed, listed_until, wait_for
from tests import test_integrity_pinfile_e2e as pinfile

pytestmark = pytest.mark.e2e

PINS_KEY = "mcpgw:pins:{" + hashlib.sha256(b"gh").hexdigest()[:32] + "}"


def policy(up: DemoUpstream, integrity: dict, state: dict) -> dict:
    return {**pinfile.policy(up, integrity), "gateway": {"state": state}}


def resp_value(reply: bytes) -> bytes | int | None:
    """A RESP integer or bulk string (what HLEN / HGET / INCR answer)."""
    if reply.startswith(b":"):
        return int(reply[1:].split(b"\r\n")[0])
    if reply.startswith(b"$-1"):
        return None
    return reply.split(b"\r\n", 1)[1].rsplit(b"\r\n", 1)[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("integrity-pinstore")


async def test_pins_are_shared_by_gateways_through_redis(workdir):
    redis = RedisServer().start()
    up = DemoUpstream(workdir, "--rug-pull", "--json-response", name="up-redis")
    shared = policy(up, TOFU, {"backend": "redis", "redis": {**redis.policy, "timeout": 1.0}})
    first = Gateway(workdir, shared, intercept=False, name="gw-a")
    second = Gateway(workdir, shared, intercept=False, name="gw-b")
    try:
        assert await listed(first) == TOOL_NAMES  # the upstream's first list: pinned by gateway a
        assert wait_for(lambda: resp_value(redis.command("HLEN", PINS_KEY)) == len(TOOL_NAMES))
        pinned = json.loads(resp_value(redis.command("HGET", PINS_KEY, "search_code")))["digest"]
        # gateway b never saw search_code before; its first sight is the changed definition, held
        # to the pin gateway a wrote (alone, it would have trusted it on first use)
        names = await listed(second)
        assert "search_code" not in names and len(names) == len(TOOL_NAMES) - 1
        async with mcp_session(second.url("/gh")) as s:
            await s.list_tools()
            with pytest.raises(McpError) as refused:
                await s.call_tool("search_code", ARGS, read_timeout_seconds=CALL_TIMEOUT)
        assert "changed since it was approved (description changed)" in refused.value.error.message
        # the operator accepts the change: the pin removed, the counter raised; both gateways follow
        redis.command("HDEL", PINS_KEY, "search_code")
        redis.command("INCR", PINS_KEY + ":v")
        assert "search_code" in await listed_until(second, lambda n: "search_code" in n)
        assert wait_for(lambda: (v := resp_value(redis.command("HGET", PINS_KEY, "search_code"))) is not None
                        and json.loads(v)["digest"] != pinned)
        assert "search_code" in await listed_until(first, lambda n: "search_code" in n)
        # Redis down: requests on the route are refused, never judged against pins that could not be read
        redis.stop()
        resp = httpx.post(second.url("/gh"), json=jsonrpc("tools/list"), headers=MCP_HEADERS, timeout=30)
        assert resp.status_code >= 500 and "search_code" not in resp.text
    finally:
        for p in (first, second, up):
            p.stop()
        redis.stop()
