"""A route's forward proxy (upstream_proxy, Kong's proxy_config; docs/rest-tools.md) for its REST
calls and for passthrough forwarding: a real mitmdump in regular mode is the proxy (with
proxyauth), in front of the REST API and the demo MCP server of this test; the gateway is a real
mitmdump too.

The proxy marks what passes through it (modify_headers adds X-Via-Proxy), so the API tells a
proxied call from a direct one. The proxy's credentials go to the proxy only: never to the API,
the client, the gateway's log or its audit records; wrong credentials are a tool error and
nothing reaches the API."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import DemoUpstream, Gateway, mcp_session
from tests.support.procs import free_port, start_process
from tests.support.rest_upstream import rest, tool  # noqa: F401 (rest: a fixture)

pytestmark = pytest.mark.e2e

MITMDUMP = Path(sys.executable).parent / "mitmdump"
PROXY_USER, PROXY_PASSWORD = "gateway", "proxy-pw-3f9a1c77e2"
CALLER = {"apikey": "proxy-caller-key-1"}


def _start_proxy(conf: Path):
    port = free_port()
    process = start_process([str(MITMDUMP), "--listen-host", "127.0.0.1", "--listen-port", str(port),
                             "--set", f"confdir={conf}", "--set", f"proxyauth={PROXY_USER}:{PROXY_PASSWORD}",
                             "--set", "modify_headers=/~q/X-Via-Proxy/yes", "--set", "flow_detail=1",
                             "--set", "ssl_insecure=true"],  # the test's https server has a throwaway certificate
                            ready=re.compile(r"proxy listening at"))
    return port, process


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    port, process = _start_proxy(tmp_path_factory.mktemp("proxy-conf"))
    yield port, process
    process.terminate()


@pytest.fixture(scope="module")
def other_proxy(tmp_path_factory):
    """The same kind of proxy on another port: routes that send it wrong credentials use this one."""
    port, process = _start_proxy(tmp_path_factory.mktemp("proxy2-conf"))
    yield port, process
    process.terminate()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, rest, proxy, other_proxy):
    workdir = tmp_path_factory.mktemp("rest-proxy")
    upstream, vendor = DemoUpstream(workdir), DemoUpstream(workdir, tls=True, name="vendor")
    via = {"http_proxy_host": "127.0.0.1", "http_proxy_port": proxy[0],
           "auth_username": PROXY_USER, "auth_password": "{env://PROXY_PASSWORD}"}
    wrong = {**via, "http_proxy_port": other_proxy[0], "auth_password": "not-the-password"}
    policy = {
        "consumers": {"alice": {"keys": [CALLER["apikey"]]}},
        "services": {"api": {"url": rest.url + "/api"}, "mcp": {"url": upstream.url}, "vendor": {"url": vendor.url}},
        "routes": {
            "proxied": {"service": "api", "paths": ["/proxied"], "key_auth": {}, "upstream_proxy": via,
                        "rest_tools": {"mode": "conversion-listener", "tools": [tool("order", "orders")]}},
            "wrong": {"service": "api", "paths": ["/wrong"], "key_auth": {},
                      "upstream_proxy": wrong,
                      "rest_tools": {"mode": "conversion-listener", "tools": [tool("order2", "orders")]}},
            "tls-only": {"service": "api", "paths": ["/tls-only"], "key_auth": {},
                         "upstream_proxy": {"https_proxy_host": "127.0.0.1", "https_proxy_port": proxy[0],
                                            "auth_username": PROXY_USER, "auth_password": "{env://PROXY_PASSWORD}"},
                         "rest_tools": {"mode": "conversion-listener", "tools": [tool("order3", "orders")]}},
            "tagged": {"service": "api", "paths": ["/tagged"], "upstream_proxy": via, "rest_tools": {
                "mode": "conversion-only", "tags": ["hub"], "tools": [tool("stock", "stock")]}},
            "mcp": {"service": "mcp", "paths": ["/mcp-via"], "key_auth": {}, "upstream_proxy": via},
            "vendor": {"service": "vendor", "paths": ["/vendor-via"], "key_auth": {}, "upstream_proxy": {
                "https_proxy_host": "127.0.0.1", "https_proxy_port": proxy[0], "auth_username": PROXY_USER,
                "auth_password": "{env://PROXY_PASSWORD}"}},
            "mcp-wrong": {"service": "mcp", "paths": ["/mcp-wrong"], "key_auth": {},
                          "upstream_proxy": wrong},
            "hub": {"service": "api", "paths": ["/hub"], "key_auth": {},
                    "rest_tools": {"mode": "listener", "server": {"tag": "hub"}}},
        },
    }
    gw = Gateway(workdir, policy, intercept=False, env={"PROXY_PASSWORD": PROXY_PASSWORD},
                 extra=["--set", f"mcp_audit={workdir / 'audit.jsonl'}"])
    gw.mcp_upstream, gw.vendor = upstream, vendor
    yield gw
    gw.stop()
    upstream.stop()
    vendor.stop()


async def _call(gateway: Gateway, path: str, name: str):
    async with mcp_session(gateway.url(path), headers=CALLER) as session:
        return await session.call_tool(name, {})


async def test_a_routes_rest_calls_go_through_its_proxy(gateway, rest):
    rest.reset()
    result = await _call(gateway, "/proxied", "order")
    assert not result.isError, result
    (seen,) = rest.received
    assert seen["path"] == "/api/orders" and rest.header(seen, "x-via-proxy") == ["yes"]
    assert not rest.header(seen, "proxy-authorization")  # the proxy's credential stays with the proxy


async def test_a_listener_calls_through_the_tagged_routes_proxy(gateway, rest):
    rest.reset()
    assert not (await _call(gateway, "/hub", "stock")).isError
    (seen,) = rest.received
    assert seen["path"] == "/api/stock" and rest.header(seen, "x-via-proxy") == ["yes"]


async def test_a_proxy_for_the_other_scheme_only_is_not_used(gateway, rest):
    rest.reset()
    assert not (await _call(gateway, "/tls-only", "order3")).isError
    (seen,) = rest.received
    assert not rest.header(seen, "x-via-proxy")  # an http service, only https_proxy_*: direct, as in Kong


async def test_refused_proxy_credentials_are_a_tool_error_and_reach_nothing(gateway, rest):
    rest.reset()
    result = await _call(gateway, "/wrong", "order2")
    assert result.isError and result.content[0].text == "The REST API could not be reached"
    assert rest.received == []


def test_a_listener_with_its_own_proxy_is_refused():
    from mcpgw.policy.models import Policy

    with pytest.raises(ValueError, match="proxy of each tagged route"):
        Policy.model_validate({"services": {"s": {"url": "http://127.0.0.1:9"}}, "routes": {
            "t": {"service": "s", "paths": ["/t"], "rest_tools": {"mode": "conversion-only", "tags": ["x"],
                                                                  "tools": [tool("a", "a")]}},
            "l": {"service": "s", "paths": ["/l"], "upstream_proxy": {"http_proxy_host": "p", "http_proxy_port": 1},
                  "rest_tools": {"mode": "listener", "server": {"tag": "x"}}}}})


def test_one_proxy_with_two_credentials_is_refused():
    from mcpgw.policy.models import Policy

    via = {"http_proxy_host": "p", "http_proxy_port": 1, "auth_username": "u"}
    with pytest.raises(ValueError, match="different credentials"):
        Policy.model_validate({"services": {"s": {"url": "http://127.0.0.1:9"}}, "routes": {
            "a": {"service": "s", "paths": ["/a"], "upstream_proxy": {**via, "auth_password": "one"}},
            "b": {"service": "s", "paths": ["/b"], "upstream_proxy": {**via, "auth_password": "two"}}}})


async def test_passthrough_requests_go_through_the_routes_proxy(gateway, proxy):
    port, process = proxy
    async with mcp_session(gateway.url("/mcp-via"), headers=CALLER) as session:
        tools = await session.list_tools()
        assert tools.tools
    authority = gateway.mcp_upstream.url.split("//", 1)[1].split("/", 1)[0]
    process.wait_for_line(re.compile(rf"POST http://{re.escape(authority)}/mcp"), 15)  # the proxy saw it
    assert PROXY_PASSWORD not in process.output


async def test_passthrough_to_an_https_server_tunnels_through_the_https_proxy(gateway, proxy):
    async with mcp_session(gateway.url("/vendor-via"), headers=CALLER) as session:
        assert (await session.list_tools()).tools
    authority = gateway.vendor.url.split("//", 1)[1].split("/", 1)[0]
    proxy[1].wait_for_line(re.compile(rf"POST https://{re.escape(authority)}/mcp"), 15)  # CONNECT, then TLS


async def test_passthrough_with_refused_proxy_credentials_fails_closed(gateway, other_proxy):
    with httpx.Client(timeout=30) as client:
        answer = client.post(gateway.url("/mcp-wrong"), headers={**CALLER, "Accept": "application/json, text/event-stream"},
                             json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                                 "protocolVersion": "2025-06-18", "capabilities": {},
                                 "clientInfo": {"name": "t", "version": "1"}}})
    assert answer.status_code == 502, answer.text
    assert "not-the-password" not in answer.text and PROXY_PASSWORD not in answer.text
    other_proxy[1].wait_for_line(re.compile(r"407"), 15)  # refused by the proxy, not failed on the way to it


def test_proxy_credentials_never_reach_logs_or_audit(gateway):  # last: after the REST and passthrough calls
    audit = gateway.workdir / "audit.jsonl"
    assert audit.exists() and "rest_tools" in audit.read_text()
    for text in (gateway.log(), audit.read_text()):
        assert PROXY_PASSWORD not in text and "not-the-password" not in text
        assert "Z2F0ZXdheTpwcm94eS1wdy0zZjlhMWM3N2Uy" not in text  # base64 of user:password
