"""Rate limits end to end: a real mitmdump with the gateway addon in front of the demo upstream
(SSE and JSON answers), raw Streamable HTTP clients and the official MCP client.

A per-tool limit refuses call N+1 of that tool only, with Kong's 429 body and headers; another
tool and another consumer keep their own budget; consumer groups get their override; the
JSON-RPC answer of a tool limit reaches the official client as an McpError; shadow mode counts
without refusing; hide_client_headers hides the counters. The attacker's side: a batch cannot
smuggle extra calls past the limit, a client-sent X-Forwarded-For or a new session does not
buy a new budget, and a denied call costs nothing."""

from __future__ import annotations

import socket

from datetime import timedelta

import httpx
import pytest
from mcp import McpError, types

from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, jsonrpc, mcp_session, parse_mcp_body

pytestmark = pytest.mark.e2e

DEV, DEV2, ADMIN = {"apikey": "dev-key"}, {"apikey": "dev2-key"}, {"apikey": "admin-key"}
PUSH = {"owner": "o", "repo": "r", "branch": "main", "files": [{"path": "a", "content": "b"}], "message": "m"}
CALL_TIMEOUT = timedelta(seconds=15)


def policy(up: DemoUpstream, up_json: DemoUpstream) -> dict:
    key_auth = {"key_names": ["apikey"], "hide_credentials": True}
    acl = {"include_consumer_groups": True, "default_acl": [{"allow": ["developer", "admin"], "scope": "tools"}],
           "tools": [{"name": "delete_repository", "acl": {"deny": ["developer"]}}]}
    push_limit = {"tools": ["push_files"], "limit": [3], "window_size": [3600], "window_type": "fixed",
                  "consumer_groups": {"admin": {"limit": [5], "window_size": [3600]}}}

    def route(service: str, path: str, **limits) -> dict:
        return {"service": service, "paths": [path], "key_auth": key_auth, "acl": acl, "rate_limits": limits}

    return {
        "consumer_groups": ["developer", "admin"],
        "consumers": {"dev": {"groups": ["developer"], "keys": ["dev-key"]},
                      "dev2": {"groups": ["developer"], "keys": ["dev2-key"]},
                      "admin": {"groups": ["admin"], "keys": ["admin-key"]}},
        "services": {"sse": {"url": up.url}, "json": {"url": up_json.url}},
        "routes": {
            "tools-sse": route("sse", "/tools-sse", rules=[push_limit]),
            "tools-json": route("json", "/tools-json", rules=[push_limit]),
            "jsonrpc": route("sse", "/jsonrpc", rules=[{**push_limit, "limit": [2], "error": "jsonrpc"}]),
            "requests": route("json", "/requests", rules=[{"limit": [4], "window_size": [60], "identifier": "ip"}]),
            "shadow": route("json", "/shadow", rules=[{**push_limit, "limit": [1], "shadow": True}]),
            "hidden": route("json", "/hidden", hide_client_headers=True, rules=[{**push_limit, "limit": [1]}]),
            "two-windows": route("json", "/two-windows", rules=[{"methods": ["tools/call"], "limit": [2, 100],
                                                                  "window_size": [1, 3600]}]),
            # per-request rules are decided at request headers, beside per-tool ones decided with the body
            "early": route("json", "/early", rules=[{"limit": [3], "window_size": [3600], "window_type": "fixed"},
                                                    {"tools": ["get_me"], "limit": [5], "window_size": [60]}]),
            "admins": {**route("json", "/admins", rules=[{"limit": [1], "window_size": [3600], "window_type": "fixed"}]),
                       "access": {"allow": ["admin"], "include_consumer_groups": True}},
        },
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("limits")
    up = DemoUpstream(workdir, name="up-sse")
    up_json = DemoUpstream(workdir, "--json-response", name="up-json")
    gw = Gateway(workdir, policy(up, up_json), intercept=False)
    try:
        yield gw, up, up_json
    finally:
        gw.stop()
        up.stop()
        up_json.stop()


async def open_session(client: httpx.AsyncClient, url: str, key: dict[str, str],
                       version: str = types.LATEST_PROTOCOL_VERSION) -> dict[str, str]:
    init = jsonrpc("initialize", {"protocolVersion": version, "capabilities": {},
                                  "clientInfo": {"name": "t", "version": "0"}})
    r = await client.post(url, json=init, headers={**MCP_HEADERS, **key})
    assert r.status_code == 200, r.text
    headers = {**MCP_HEADERS, **key, "Mcp-Session-Id": r.headers["mcp-session-id"]}
    r = await client.post(url, json=jsonrpc("notifications/initialized", id=None), headers=headers)
    assert r.status_code == 202, r.text
    return headers


async def call(client, url, headers, tool="push_files", id=7, **extra) -> httpx.Response:
    return await client.post(url, json=jsonrpc("tools/call", {"name": tool, "arguments": PUSH}, id=id),
                             headers={**headers, **extra})


@pytest.mark.parametrize("route", ["tools-sse", "tools-json"])
async def test_tool_limit_refuses_call_n_plus_one_of_that_tool_only(env, route):
    gw, up, up_json = env
    upstream = up if route == "tools-sse" else up_json
    upstream.reset()
    url = gw.url(f"/{route}")
    async with httpx.AsyncClient(timeout=30) as client:
        dev = await open_session(client, url, DEV)
        for remaining in (2, 1, 0):
            r = await call(client, url, dev)
            assert r.status_code == 200 and "result" in parse_mcp_body(r)[0], r.text
            assert r.headers["x-ratelimit-limit-hour"] == "3"
            assert r.headers["x-ratelimit-remaining-hour"] == str(remaining)
            assert r.headers["ratelimit-remaining"] == str(remaining)
        r = await call(client, url, dev)
        assert r.status_code == 429
        assert r.json() == {"message": "API rate limit exceeded"}
        assert r.headers["content-type"].startswith("application/json")
        assert r.headers["ratelimit-limit"] == "3" and r.headers["ratelimit-remaining"] == "0"
        assert r.headers["x-ratelimit-remaining-hour"] == "0"
        assert 0 < int(r.headers["retry-after"]) <= 3600
        assert int(r.headers["ratelimit-reset"]) == int(r.headers["retry-after"])
        assert upstream.tool_calls() == ["push_files"] * 3  # the refused call never reached it

        other_tool = await call(client, url, dev, tool="get_me")
        assert other_tool.status_code == 200 and "x-ratelimit-limit-hour" not in other_tool.headers
        dev2 = await open_session(client, url, DEV2)
        assert (await call(client, url, dev2)).status_code == 200  # another consumer: its own budget


async def test_consumer_group_override_gives_admins_their_own_limit(env):
    gw, _, _ = env
    url = gw.url("/tools-json")
    async with httpx.AsyncClient(timeout=30) as client:
        admin = await open_session(client, url, ADMIN)
        codes = [(await call(client, url, admin)).status_code for _ in range(6)]
        assert codes == [200] * 5 + [429]


async def test_jsonrpc_error_reaches_the_official_client_and_sse_only_clients(env):
    gw, up, _ = env
    up.reset()
    async with mcp_session(gw.url("/jsonrpc"), headers=DEV2) as session:
        for _ in range(2):
            assert not (await session.call_tool("push_files", PUSH, read_timeout_seconds=CALL_TIMEOUT)).isError
        with pytest.raises(McpError) as refused:
            await session.call_tool("push_files", PUSH, read_timeout_seconds=CALL_TIMEOUT)
        assert refused.value.error.code == -32029
        assert refused.value.error.message == "API rate limit exceeded"
        assert refused.value.error.data["retry_after"] > 0
        assert not (await session.call_tool("get_me", {}, read_timeout_seconds=CALL_TIMEOUT)).isError
    async with httpx.AsyncClient(timeout=30) as client:
        url = gw.url("/jsonrpc")
        headers = await open_session(client, url, DEV2)  # a new session: the same consumer's budget
        r = await call(client, url, headers, Accept="text/event-stream")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        [error] = parse_mcp_body(r)
        assert error["id"] == 7 and error["error"]["code"] == -32029
        assert r.headers["retry-after"]
    assert up.tool_calls().count("push_files") == 2


async def test_a_batch_cannot_smuggle_calls_past_the_limit(env):
    gw, up, _ = env
    url = gw.url("/jsonrpc")
    async with httpx.AsyncClient(timeout=30) as client:
        headers = await open_session(client, url, DEV, "2025-03-26")  # the last revision with batches
        batch = [jsonrpc("tools/call", {"name": "push_files", "arguments": PUSH}, id=i) for i in range(3)]
        r = await client.post(url, json=batch, headers=headers)
        answers = parse_mcp_body(r)
        assert r.status_code == 200 and [a["id"] for a in answers] == [0, 1, 2]
        assert [a["error"]["code"] for a in answers] == [-32029] * 3  # 3 > 2: refused whole, nothing counted
        up.reset()
        r = await call(client, url, headers)
        assert "result" in parse_mcp_body(r)[0]  # the refused batch cost nothing
        assert up.tool_calls() == ["push_files"]


async def test_a_denied_call_costs_nothing(env):
    gw, _, _ = env
    url = gw.url("/two-windows")
    async with httpx.AsyncClient(timeout=30) as client:
        dev = await open_session(client, url, DEV)
        for _ in range(3):
            r = await call(client, url, dev, tool="delete_repository")
            assert parse_mcp_body(r)[0]["error"]["code"] == -32602  # the ACL's denial, not the limit
        assert (await call(client, url, dev, tool="get_me")).status_code == 200


async def test_per_request_limit_by_ip_ignores_forwarded_headers(env):
    gw, _, _ = env
    url = gw.url("/requests")
    async with httpx.AsyncClient(timeout=30) as client:
        headers = await open_session(client, url, DEV)  # initialize and initialized: 2 of 4
        assert (await call(client, url, headers, tool="get_me")).status_code == 200
        assert (await call(client, url, headers, tool="get_me", **{"X-Forwarded-For": "10.9.9.9"})).status_code == 200
        r = await call(client, url, headers, tool="get_me", **{"X-Forwarded-For": "10.1.1.1", "X-Real-IP": "10.1.1.2"})
        assert r.status_code == 429 and r.headers["x-ratelimit-limit-minute"] == "4"
        r = await client.delete(url, headers={**headers})  # every HTTP request counts, not only POSTs
        assert r.status_code == 429 and r.json() == {"message": "API rate limit exceeded"}


async def test_shadow_mode_counts_and_logs_without_refusing(env):
    gw, _, up_json = env
    up_json.reset()
    url = gw.url("/shadow")
    async with httpx.AsyncClient(timeout=30) as client:
        dev = await open_session(client, url, DEV)
        codes = [(await call(client, url, dev)).status_code for _ in range(3)]
    assert codes == [200, 200, 200] and up_json.tool_calls() == ["push_files"] * 3
    gw.process.wait_for("rate limit 0 would refuse consumer 'dev'", timeout=10)


async def test_hide_client_headers(env):
    gw, _, _ = env
    url = gw.url("/hidden")
    async with httpx.AsyncClient(timeout=30) as client:
        dev = await open_session(client, url, DEV)
        ok, refused = await call(client, url, dev), await call(client, url, dev)
    assert ok.status_code == 200 and refused.status_code == 429
    for r in (ok, refused):
        assert not [h for h in r.headers if "ratelimit" in h.lower()]
    assert int(refused.headers["retry-after"]) > 0


async def test_every_window_is_shown_and_the_tightest_one_refuses(env):
    gw, _, _ = env
    url = gw.url("/two-windows")
    async with httpx.AsyncClient(timeout=30) as client:
        dev = await open_session(client, url, DEV2)
        for _ in range(3):  # within one second at most 2, unless the second turns between calls
            r = await call(client, url, dev, tool="get_me")
            if r.status_code == 429:
                break
        assert r.headers["x-ratelimit-limit-second"] == "2" and r.headers["x-ratelimit-limit-hour"] == "100"
        assert int(r.headers["x-ratelimit-remaining-hour"]) >= 97


INIT = jsonrpc("initialize", {"protocolVersion": types.LATEST_PROTOCOL_VERSION, "capabilities": {},
                              "clientInfo": {"name": "t", "version": "0"}})


def raw_headers_only(gw, path: str, key: str, declared: int) -> bytes:
    """A POST whose headers promise `declared` bytes of body and none is ever sent: what the gateway
    answers, read before any body byte left (b"" if it waited for the body until the deadline)."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\napikey: {key}\r\n"
            f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            f"Content-Length: {declared}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=20) as s:
        s.sendall(head)
        answer = b""
        try:
            while chunk := s.recv(65536):  # the gateway closes after a refusal of an unread body
                answer += chunk
        except TimeoutError:
            pass
        return answer


async def test_a_request_over_a_per_request_limit_is_refused_before_its_body(env):
    gw, _, up_json = env
    url = gw.url("/early")
    async with httpx.AsyncClient(timeout=30) as client:
        headers = await open_session(client, url, DEV2)  # initialize and initialized: 2 of 3
        r = await call(client, url, headers, tool="get_me")
        # both rules' windows: the per-request one (headers) and the per-tool one (body)
        assert r.status_code == 200 and r.headers["x-ratelimit-remaining-hour"] == "0"
        assert r.headers["x-ratelimit-limit-minute"] == "5" and r.headers["x-ratelimit-remaining-minute"] == "4"
        calls = up_json.tool_calls()
        answer = raw_headers_only(gw, "/early", DEV2["apikey"], 512 * 1024)
    assert answer.startswith(b"HTTP/1.1 429"), answer[:200]  # answered with 512 KiB of body still unsent
    assert b"retry-after" in answer.lower() and answer.endswith(b'\r\n\r\n{"message":"API rate limit exceeded"}')
    assert up_json.tool_calls() == calls


async def test_a_request_the_route_refuses_costs_nothing_at_headers(env):
    gw, _, _ = env
    url = gw.url("/admins")
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(3):  # refused by route access each time, never by the limit
            r = await client.post(url, json=INIT, headers={**MCP_HEADERS, **DEV})
            assert r.status_code == 403, r.text
        r = await client.post(url, json=INIT, headers={**MCP_HEADERS, **ADMIN})
        assert r.status_code == 200 and r.headers["x-ratelimit-remaining-hour"] == "0"
        r = await client.post(url, json=INIT, headers={**MCP_HEADERS, **ADMIN})
        assert r.status_code == 429
