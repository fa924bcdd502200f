"""The REST call a tools/call makes, as a CLIENT span under the call's SERVER span
(docs/rest-tools.md), through a real mitmdump exporting OTLP/HTTP to a receiver in this test.

The span has the method, the URL without its query string (which carries an API key here), the
status or the failure; never a payload, a header or a credential."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.gateway import mcp_session
from tests.support.procs import free_port
from tests.support.rest_upstream import RestUpstream
from tests.test_telemetry_e2e import Receiver, traced_gateway

pytestmark = pytest.mark.e2e

API_KEY = "query-api-key-5c8e1f0a9b"
CALLER = {"apikey": "caller-key-7d2e4a61"}
CLIENT_KIND, SERVER_KIND, ERROR = 3, 2, 2  # OTLP's SPAN_KIND_CLIENT / _SERVER, STATUS_CODE_ERROR


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("rest-telemetry")
    rest, receiver = RestUpstream().start(), Receiver()
    down = f"http://127.0.0.1:{free_port()}"
    tools = [{"name": "get-order", "description": "d", "path": "orders/{orderId}", "query": {"key": ["{env://API_KEY}"]},
              "parameters": [{"name": "orderId", "in": "path", "schema": {"type": "string"}}],
              "request_body": {"content": {"application/json": {"schema": {"type": "object"}}}}, "method": "POST"},
             {"name": "missing", "description": "d", "path": "status/404"}]
    policy = {"consumers": {"alice": {"keys": [CALLER["apikey"]]}},
              "services": {"api": {"url": rest.url + "/api"}, "down": {"url": down}},
              "routes": {"shop": {"service": "api", "paths": ["/shop"], "key_auth": {},
                                  "rest_tools": {"mode": "conversion-listener", "tools": tools}},
                         "down": {"service": "down", "paths": ["/down"], "key_auth": {},
                                  "rest_tools": {"mode": "conversion-listener",
                                                 "tools": [{"name": "gone", "description": "d", "path": "x"}]}}}}
    gw = traced_gateway(workdir, policy, receiver, API_KEY=API_KEY)
    yield gw, rest, receiver
    gw.stop()
    receiver.stop()
    rest.stop()


def _pair(receiver: Receiver, url_end: str) -> tuple[dict, dict]:
    """(the SERVER span of the tools/call, the CLIENT span of its REST call to a URL ending so)."""
    (client,) = receiver.wait_spans(lambda s: s["kind"] == CLIENT_KIND and s["attrs"].get("url.full", "").endswith(url_end))
    (server,) = receiver.wait_spans(lambda s: s["span_id"] == client["parent"])
    assert server["name"] == "tools/call" and server["attrs"]["mcp.method.name"] == "tools/call"
    return server, client


async def test_a_rest_call_is_a_client_span_under_the_tool_call(setup):
    gw, rest, receiver = setup
    async with mcp_session(gw.url("/shop"), headers=CALLER) as session:
        result = await session.call_tool("get-order", {"orderId": "o 1", "body": {"secret-payload": "p-9f"}})
    assert not result.isError
    server, client = _pair(receiver, "/api/orders/o%201")
    assert server["kind"] == SERVER_KIND and client["trace_id"] == server["trace_id"]
    assert client["name"] == "HTTP POST"
    host, port = rest.url[7:].split(":")
    assert client["attrs"] == {"http.request.method": "POST", "url.full": f"{rest.url}/api/orders/o%201",
                               "server.address": host, "server.port": int(port), "http.response.status_code": 200}
    assert server["start"] <= client["start"] <= client["end"] <= server["end"]


async def test_http_errors_and_failures_are_error_spans(setup):
    gw, _, receiver = setup
    async with mcp_session(gw.url("/shop"), headers=CALLER) as session:
        assert (await session.call_tool("missing", {})).isError
    _, client = _pair(receiver, "/api/status/404")
    assert client["attrs"]["http.response.status_code"] == 404
    assert client["attrs"]["error.type"] == "404" and client["status"] == ERROR
    async with mcp_session(gw.url("/down"), headers=CALLER) as session:
        assert (await session.call_tool("gone", {})).isError
    _, client = _pair(receiver, "/x")
    assert client["attrs"]["error.type"] == "unreachable" and client["status"] == ERROR
    assert "http.response.status_code" not in client["attrs"]


async def test_no_span_carries_a_credential_or_a_payload(setup):
    gw, _, receiver = setup
    async with mcp_session(gw.url("/shop"), headers=CALLER) as session:
        await session.call_tool("get-order", {"orderId": "o-2", "body": {"secret-payload": "p-9f"}})
    receiver.wait_spans(lambda s: s["attrs"].get("url.full", "").endswith("/orders/o-2"))
    dumped = json.dumps(receiver.spans)
    for secret in (API_KEY, CALLER["apikey"], "p-9f", "key="):
        assert secret not in dumped, secret
    assert API_KEY not in gw.log()


def test_a_refused_call_makes_no_rest_span(setup):
    gw, _, receiver = setup
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"Accept": "application/json", "Content-Type": "application/json", **CALLER}
    with httpx.Client(timeout=30) as client:
        sid = client.post(gw.url("/shop"), json=init, headers=headers).headers["mcp-session-id"]
        bad = {"jsonrpc": "2.0", "id": 77, "method": "tools/call", "params": {"name": "get-order", "arguments": {"orderId": 5}}}
        answer = client.post(gw.url("/shop"), json=bad, headers={**headers, "Mcp-Session-Id": sid}).json()
    assert answer["error"]["code"] == -32602
    (server,) = receiver.wait_spans(lambda s: s["kind"] == SERVER_KIND and s["attrs"].get("jsonrpc.request.id") == "77"
                                    and s["attrs"].get("error.type") == "-32602")
    assert not [s for s in receiver.spans if s["parent"] == server["span_id"]]
