"""A tool route's request_transform on its REST calls (docs/rest-tools.md), through a real
mitmdump with the official MCP client and a REST API that records what reaches it: the tool's
own route's operations apply to each REST request once; a listener's transform shapes only the
client headers it forwards, the tagged route's operations shape its REST calls."""

from __future__ import annotations

import pytest

from tests.support.gateway import Gateway, mcp_session
from tests.support.rest_upstream import rest, tool  # noqa: F401 (rest: a fixture)

pytestmark = pytest.mark.e2e

CALLER = {"apikey": "transform-caller-key-1"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, rest):
    workdir = tmp_path_factory.mktemp("rest-transform")
    policy = {
        "consumers": {"alice": {"keys": [CALLER["apikey"]]}},
        "services": {"api": {"url": rest.url + "/api"}, "inv": {"url": rest.url + "/inv"}},
        "routes": {
            "shop": {"service": "api", "paths": ["/shop"], "key_auth": {},
                     "request_transform": {"remove": {"headers": ["X-Debug"], "querystring": ["drop"]},
                                           "add": {"headers": ["X-Team:platform"], "querystring": ["source:gateway"]},
                                           "append": {"headers": ["X-Trace:gw"]},
                                           "rename": {"querystring": ["old:new"]}},
                     "rest_tools": {"mode": "conversion-listener", "tools": [
                         tool("order", "orders/{id}", query={"old": ["1"], "drop": ["x"]},
                              parameters=[{"name": "id", "in": "path", "schema": {"type": "string"}},
                                          {"name": "q", "in": "query", "schema": {"type": "string"}}])]}},
            "bare": {"service": "api", "paths": ["/bare"], "key_auth": {},
                     "request_transform": {"append": {"headers": ["X-Trace:gw"]}},
                     "rest_tools": {"mode": "conversion-listener", "server": {"forward_client_headers": False},
                                    "tools": [tool("ping-api", "ping")]}},
            "inv": {"service": "inv", "paths": ["/inv"], "key_auth": {},
                    "request_transform": {"add": {"headers": ["X-Inv:yes"], "querystring": ["via:hub"]},
                                          "remove": {"headers": ["X-Debug"]}},
                    "rest_tools": {"mode": "conversion-only", "tags": ["hub"], "tools": [tool("stock", "stock")]}},
            "hub": {"service": "api", "paths": ["/hub"], "key_auth": {},
                    "request_transform": {"add": {"headers": ["X-Hub:1"]}},
                    "rest_tools": {"mode": "listener", "server": {"tag": "hub"}}},
        },
    }
    gw = Gateway(workdir, policy, intercept=False)
    yield gw
    gw.stop()


async def test_the_tool_routes_transform_applies_to_its_rest_call_once(gateway, rest):
    rest.reset()
    async with mcp_session(gateway.url("/shop"), headers={**CALLER, "X-Debug": "secret-debug", "X-Trace": "client"}) as s:
        assert not (await s.call_tool("order", {"id": "o-1", "q": "a b"})).isError
    (seen,) = rest.received
    assert seen["path"] == "/api/orders/o-1"
    assert sorted(seen["query"].split("&")) == ["new=1", "q=a+b", "source=gateway"]
    assert rest.header(seen, "x-team") == ["platform"]
    assert rest.header(seen, "x-trace") == ["client", "gw"]  # appended once, not once per application
    assert not rest.header(seen, "x-debug")


async def test_without_forwarded_headers_the_header_operations_apply_to_the_rest_request(gateway, rest):
    rest.reset()
    async with mcp_session(gateway.url("/bare"), headers={**CALLER, "X-Trace": "client"}) as s:
        assert not (await s.call_tool("ping-api", {})).isError
    (seen,) = rest.received
    assert rest.header(seen, "x-trace") == ["gw"]


async def test_a_listener_calls_with_the_tagged_routes_transform(gateway, rest):
    rest.reset()
    async with mcp_session(gateway.url("/hub"), headers={**CALLER, "X-Debug": "secret-debug", "x-debug": "2"}) as s:
        assert not (await s.call_tool("stock", {})).isError
    (seen,) = rest.received
    assert seen["path"] == "/inv/stock" and seen["query"] == "via=hub"
    assert rest.header(seen, "x-inv") == ["yes"] and not rest.header(seen, "x-debug")
    assert rest.header(seen, "x-hub") == ["1"]  # the listener's own transform, on the headers it forwards
    assert not rest.header(seen, "x-team")  # another route's operations never apply
