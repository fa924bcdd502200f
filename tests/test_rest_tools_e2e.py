"""REST operations as MCP tools the gateway serves itself (docs/rest-tools.md), through a real
mitmdump, with the official MCP client and a local REST API that records what reaches it.

What the API receives is exactly what the call's arguments describe; arguments never choose
another path, header or host; failures of the API are tool errors; the gateway's MCP server
speaks Streamable HTTP (sessions bound to the caller, versions negotiated, JSON or SSE); a
listener hands the client's credentials to no other API, and a conversion-only route serves
nobody directly."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from mcp.shared.exceptions import McpError

from tests.support.gateway import MCP_HEADERS, Gateway, jsonrpc, mcp_session, parse_mcp_body
from tests.support.procs import free_port
from tests.support.rest_upstream import rest, tool  # noqa: F401 (rest: a fixture)

pytestmark = pytest.mark.e2e

REST_KEY = "rest-api-key-0123456789"
INV_KEY = "inventory-key-0123456789"
ALICE, BOB = {"apikey": "alice-key-123456"}, {"apikey": "bob-key-1234567"}
INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
ITEM = {
    "name": "create-item", "description": "Create an item", "method": "POST", "path": "items/{itemId}",
    "parameters": [{"name": "itemId", "in": "path", "schema": {"type": "string"}},
                   {"name": "tags", "in": "query", "schema": {"type": "array", "items": {"type": "string"}}},
                   {"name": "dry_run", "in": "query", "schema": {"type": "boolean"}},
                   {"name": "X-Request-Tag", "in": "header"}, {"name": "session", "in": "cookie"}],
    "request_body": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}}},
    "headers": {"X-Api-Version": ["2"]}, "query": {"api_key": ["{env://REST_KEY}"]},
}


@pytest.fixture(scope="module")
def gateway(workdir, rest):
    down = f"http://127.0.0.1:{free_port()}"
    extra = [tool(f"page-{i}", f"p/{i}") for i in range(3)]
    policy = {
        "consumers": {"alice": {"keys": [ALICE["apikey"]]}, "bob": {"keys": [BOB["apikey"]]}},
        "services": {"api": {"url": rest.url + "/base"}, "inv": {"url": rest.url + "/inv"},
                     "crm": {"url": rest.url + "/crm"}, "down": {"url": down}},
        "routes": {
            "shop": {"service": "api", "paths": ["/shop"], "key_auth": {}, "rest_tools": {
                "mode": "conversion-listener", "server": {"page_size": 2, "max_response_size": "1MiB"},
                "tools": [ITEM, tool("status", "status/{code}", parameters=[{"name": "code", "in": "path"}]),
                          tool("text", "text"), tool("big", "big"), *extra]},
                "rate_limits": {"rules": [{"tools": ["page-2"], "limit": [2], "window_size": [3600]}]}},
            "slow": {"service": "api", "paths": ["/slow-mcp"], "key_auth": {}, "rest_tools": {
                "mode": "conversion-listener", "server": {"timeout": 1}, "tools": [tool("wait", "/slow")]}},
            "down": {"service": "down", "paths": ["/down"], "key_auth": {}, "rest_tools": {
                "mode": "conversion-listener", "tools": [tool("gone", "x")]}},
            "inv": {"service": "inv", "paths": ["/inv"], "key_auth": {}, "credentials": {
                "mode": "inject", "add": {"headers": ["X-Api-Key:{env://INV_KEY}"]}},
                "rest_tools": {"mode": "conversion-only", "tags": ["hub"], "tools": [tool("stock", "stock")]}},
            "crm": {"service": "crm", "paths": ["/crm"], "rest_tools": {
                "mode": "conversion-only", "tags": ["hub"], "tools": [tool("customer", "customer")]}},
            "hub": {"service": "api", "paths": ["/hub"], "key_auth": {}, "rest_tools": {
                "mode": "listener", "server": {"tag": "hub"}}},
        },
    }
    gw = Gateway(workdir, policy, intercept=False, env={"REST_KEY": REST_KEY, "INV_KEY": INV_KEY},
                 extra=["--set", f"mcp_audit={workdir / 'audit.jsonl'}"])
    yield gw
    gw.stop()


def names(result) -> list[str]:
    return [t.name for t in result.tools]


async def test_the_api_receives_exactly_what_the_arguments_describe(gateway, rest):
    rest.reset()
    headers = {**ALICE, "X-Trace-Id": "trace-1"}
    async with mcp_session(gateway.url("/shop"), headers=headers) as session:
        result = await session.call_tool("create-item", {
            "itemId": "it 1", "tags": ["a", "b&c"], "dry_run": True, "X-Request-Tag": "blue", "session": "s;1",
            "body": {"name": "widget"}})
    assert not result.isError
    (seen,) = rest.received
    assert (seen["method"], seen["path"]) == ("POST", "/base/items/it%201")
    assert seen["query"] == f"api_key={REST_KEY}&tags=a&tags=b%26c&dry_run=true"
    assert seen["body"] == '{"name":"widget"}'
    for name, value in [("x-api-version", "2"), ("x-request-tag", "blue"), ("cookie", "session=s%3B1"),
                        ("content-type", "application/json"), ("x-trace-id", "trace-1")]:
        assert rest.header(seen, name) == [value], name
    assert not rest.header(seen, "mcp-session-id") and not rest.header(seen, "mcp-protocol-version")
    assert rest.header(seen, "content-length") == ["17"] and rest.header(seen, "host") == [rest.url[7:]]
    assert result.structuredContent["path"] == "/base/items/it%201"  # the JSON answer, also structured
    record = audited(gateway, "create-item")
    assert record["jsonrpc"]["method"] == "tools/call" and record["decision"] == "allow"
    assert record["consumer"]["name"] == "alice" and record["http"]["upstream_status"] is None
    assert record["rest_tools"] == [{"tool": "create-item", "route": "shop", "method": "POST",
                                     "path": "/base/items/it%201", "status": 200, "ms": record["rest_tools"][0]["ms"]}]
    assert REST_KEY not in gateway.log() and REST_KEY not in (gateway.workdir / "audit.jsonl").read_text()


def audited(gateway: Gateway, tool_name: str) -> dict:
    """The audit record of a tools/call (written when its flow ends: waited for)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        path = gateway.workdir / "audit.jsonl"
        for line in path.read_text().splitlines() if path.exists() else []:
            record = json.loads(line)
            if any(call["tool"] == tool_name for call in record.get("rest_tools") or []):
                return record
        time.sleep(0.1)
    raise AssertionError(f"no audit record of a call of {tool_name}")


@pytest.mark.parametrize("value, path", [("../admin", "/base/items/..%2Fadmin"), ("%2F", "/base/items/%252F"),
                                         ("../../inv/stock", "/base/items/..%2F..%2Finv%2Fstock")])
async def test_path_arguments_cannot_reach_another_path(gateway, rest, value, path):
    rest.reset()
    async with mcp_session(gateway.url("/shop"), headers=ALICE) as session:
        await session.call_tool("create-item", {"itemId": value, "body": {"name": "x"}})
    assert [r["path"] for r in rest.received] == [path]


@pytest.mark.parametrize("arguments, message", [
    ({"itemId": "..", "body": {"name": "x"}}, "must not be empty, '.' or '..'"),
    ({"itemId": "1"}, "'body' is a required property"),
    ({"itemId": "1", "body": {"name": 5}}, "body/name"),
    ({"itemId": "1", "body": {"name": "x"}, "admin": True}, "Additional properties are not allowed"),
    ({"itemId": "1", "body": {"name": "x"}, "X-Request-Tag": "a\r\nX-Admin: 1"}, "control characters"),
])
async def test_bad_arguments_are_refused_and_never_sent(gateway, rest, arguments, message):
    rest.reset()
    async with mcp_session(gateway.url("/shop"), headers=ALICE) as session:
        with pytest.raises(McpError) as e:
            await session.call_tool("create-item", arguments)
        with pytest.raises(McpError, match="Unknown tool"):
            await session.call_tool("no-such-tool", {})
    assert e.value.error.code == -32602 and message in e.value.error.message
    assert rest.received == []


async def test_api_failures_are_tool_errors(gateway, rest):
    async with mcp_session(gateway.url("/shop"), headers=ALICE) as session:
        failed = await session.call_tool("status", {"code": "404"})
        assert failed.isError and failed.content[0].text.startswith("HTTP 404 Not Found")
        text = await session.call_tool("text", {})
        assert not text.isError and text.content[0].text == "plain words" and text.structuredContent is None
        big = await session.call_tool("big", {})
        assert big.isError and "larger than 1048576 bytes" in big.content[0].text
    async with mcp_session(gateway.url("/slow-mcp"), headers=ALICE) as session:
        slow = await session.call_tool("wait", {})
        assert slow.isError and slow.content[0].text == "The REST API did not answer within 1 s"
    async with mcp_session(gateway.url("/down"), headers=ALICE) as session:
        gone = await session.call_tool("gone", {})
        assert gone.isError and gone.content[0].text == "The REST API could not be reached"
        assert "127.0.0.1" not in gone.content[0].text


async def post(gateway: Gateway, path: str, message: dict | list, headers: dict | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(gateway.url(path), json=message, headers={**MCP_HEADERS, **(headers or {})})


async def open_session(gateway: Gateway, caller: dict, version: str = "2025-06-18") -> tuple[str, dict]:
    response = await post(gateway, "/shop", jsonrpc("initialize", {**INIT, "protocolVersion": version}), caller)
    assert response.status_code == 200
    return response.headers["mcp-session-id"], parse_mcp_body(response)[0]


async def test_initialize_negotiates_the_version_and_binds_the_session(gateway):
    session, answer = await open_session(gateway, ALICE)
    assert answer["result"]["protocolVersion"] == "2025-06-18"
    assert answer["result"]["capabilities"] == {"tools": {"listChanged": False}}
    assert answer["result"]["serverInfo"]["name"] == "shop"
    _, newest = await open_session(gateway, ALICE, "1999-01-01")
    assert newest["result"]["protocolVersion"] == "2025-11-25"
    ping = jsonrpc("ping", id=7)
    ok = await post(gateway, "/shop", ping, {**ALICE, "Mcp-Session-Id": session})
    assert parse_mcp_body(ok) == [{"jsonrpc": "2.0", "id": 7, "result": {}}]
    # bob cannot use alice's session; nobody goes without one
    assert (await post(gateway, "/shop", ping, {**BOB, "Mcp-Session-Id": session})).status_code == 404
    assert (await post(gateway, "/shop", ping, BOB)).status_code == 400
    assert (await post(gateway, "/shop", ping, {"Mcp-Session-Id": session})).status_code == 401
    async with httpx.AsyncClient(timeout=30) as client:
        stream = await client.get(gateway.url("/shop"), headers={**ALICE, "Mcp-Session-Id": session,
                                                                  "Accept": "text/event-stream"})
        assert stream.status_code == 405 and stream.headers["allow"] == "POST, DELETE"
        assert (await client.delete(gateway.url("/shop"), headers={**ALICE, "Mcp-Session-Id": session})).status_code == 200
    assert (await post(gateway, "/shop", ping, {**ALICE, "Mcp-Session-Id": session})).status_code == 404  # ended


async def test_answers_as_the_client_accepts_and_notifications_are_accepted(gateway):
    session, _ = await open_session(gateway, ALICE)
    headers = {**ALICE, "Mcp-Session-Id": session}
    sse = await post(gateway, "/shop", jsonrpc("ping", id=1), {**headers, "Accept": "text/event-stream"})
    assert sse.headers["content-type"].startswith("text/event-stream") and parse_mcp_body(sse)[0]["id"] == 1
    note = await post(gateway, "/shop", jsonrpc("notifications/initialized", id=None), headers)
    assert note.status_code == 202 and note.content == b""
    unknown = parse_mcp_body(await post(gateway, "/shop", jsonrpc("resources/list", {}, id=2), headers))[0]
    assert unknown["error"]["code"] == -32601


async def test_tools_list_is_paginated(gateway):
    session, _ = await open_session(gateway, ALICE)
    headers, seen, cursor = {**ALICE, "Mcp-Session-Id": session}, [], None
    for page in range(10):
        params = {"cursor": cursor} if cursor else {}
        result = parse_mcp_body(await post(gateway, "/shop", jsonrpc("tools/list", params, id=page), headers))[0]["result"]
        assert len(result["tools"]) <= 2
        seen += [t["name"] for t in result["tools"]]
        cursor = result.get("nextCursor")
        if cursor is None:
            break
    assert seen == ["create-item", "status", "text", "big", "page-0", "page-1", "page-2"]
    forged = base64.urlsafe_b64encode(b"tools:99").decode()
    for bad in (forged, "%%%", 5):
        error = parse_mcp_body(await post(gateway, "/shop", jsonrpc("tools/list", {"cursor": bad}), headers))[0]
        assert error["error"]["code"] == -32602


async def test_listener_sends_each_route_its_own_credential_only(gateway, rest):
    rest.reset()
    headers = {**ALICE, "Authorization": "Bearer client-token", "X-Trace-Id": "t-2"}
    async with mcp_session(gateway.url("/hub"), headers=headers) as session:
        assert names(await session.list_tools()) == ["stock", "customer"]
        assert not (await session.call_tool("stock", {})).isError
        assert not (await session.call_tool("customer", {})).isError
    stock, customer = rest.received
    assert stock["path"] == "/inv/stock" and rest.header(stock, "x-api-key") == [INV_KEY]
    assert customer["path"] == "/crm/customer" and not rest.header(customer, "x-api-key")
    for seen in (stock, customer):
        assert not rest.header(seen, "authorization") and not rest.header(seen, "apikey")
        assert rest.header(seen, "x-trace-id") == ["t-2"]
        assert seen["method"] == "GET" and not rest.header(seen, "content-length") and seen["body"] == ""
    assert INV_KEY not in gateway.log()


async def test_conversion_only_route_serves_nobody_directly(gateway, rest):
    rest.reset()
    response = await post(gateway, "/inv", jsonrpc("initialize", INIT), ALICE)
    assert response.status_code == 404 and "listener" in response.json()["message"]
    assert rest.received == []


async def test_rate_limits_count_the_calls_the_gateway_answers(gateway, rest):
    rest.reset()
    session, _ = await open_session(gateway, BOB)
    call = jsonrpc("tools/call", {"name": "page-2", "arguments": {}})
    statuses = [(await post(gateway, "/shop", call, {**BOB, "Mcp-Session-Id": session})).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # Kong's rate-limiting answer, as on a proxied route
    assert [r["path"] for r in rest.received] == ["/base/p/2"] * 2  # the refused call never reached the API
