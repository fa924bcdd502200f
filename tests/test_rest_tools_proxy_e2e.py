"""REST calls through the route's forward proxy (rest_tools.proxy, Kong's proxy_config;
docs/rest-tools.md): a real mitmdump in regular mode is the proxy (with proxyauth), in front of
the REST API of this test; the gateway is a real mitmdump too.

The proxy marks what passes through it (modify_headers adds X-Via-Proxy), so the API tells a
proxied call from a direct one. The proxy's credentials go to the proxy only: never to the API,
the client, the gateway's log or its audit records; wrong credentials are a tool error and
nothing reaches the API."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.support.gateway import Gateway, mcp_session
from tests.support.procs import free_port, start_process
from tests.support.rest_upstream import rest, tool  # noqa: F401 (rest: a fixture)

pytestmark = pytest.mark.e2e

MITMDUMP = Path(sys.executable).parent / "mitmdump"
PROXY_USER, PROXY_PASSWORD = "gateway", "proxy-pw-3f9a1c77e2"
CALLER = {"apikey": "proxy-caller-key-1"}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    port = free_port()
    conf = tmp_path_factory.mktemp("proxy-conf")
    process = start_process([str(MITMDUMP), "--listen-host", "127.0.0.1", "--listen-port", str(port),
                             "--set", f"confdir={conf}", "--set", f"proxyauth={PROXY_USER}:{PROXY_PASSWORD}",
                             "--set", "modify_headers=/~q/X-Via-Proxy/yes", "--set", "flow_detail=0"],
                            ready=re.compile(r"proxy listening at"))
    yield port
    process.terminate()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, rest, proxy):
    workdir = tmp_path_factory.mktemp("rest-proxy")
    via = {"http_proxy_host": "127.0.0.1", "http_proxy_port": proxy,
           "auth_username": PROXY_USER, "auth_password": "{env://PROXY_PASSWORD}"}
    policy = {
        "consumers": {"alice": {"keys": [CALLER["apikey"]]}},
        "services": {"api": {"url": rest.url + "/api"}},
        "routes": {
            "proxied": {"service": "api", "paths": ["/proxied"], "key_auth": {},
                        "rest_tools": {"mode": "conversion-listener", "proxy": via, "tools": [tool("order", "orders")]}},
            "wrong": {"service": "api", "paths": ["/wrong"], "key_auth": {},
                      "rest_tools": {"mode": "conversion-listener", "proxy": {**via, "auth_password": "not-the-password"},
                                     "tools": [tool("order2", "orders")]}},
            "tls-only": {"service": "api", "paths": ["/tls-only"], "key_auth": {},
                         "rest_tools": {"mode": "conversion-listener", "tools": [tool("order3", "orders")],
                                        "proxy": {"https_proxy_host": "127.0.0.1", "https_proxy_port": proxy}}},
            "tagged": {"service": "api", "paths": ["/tagged"], "rest_tools": {
                "mode": "conversion-only", "tags": ["hub"], "proxy": via, "tools": [tool("stock", "stock")]}},
            "hub": {"service": "api", "paths": ["/hub"], "key_auth": {},
                    "rest_tools": {"mode": "listener", "server": {"tag": "hub"}}},
        },
    }
    gw = Gateway(workdir, policy, intercept=False, env={"PROXY_PASSWORD": PROXY_PASSWORD},
                 extra=["--set", f"mcp_audit={workdir / 'audit.jsonl'}"])
    yield gw
    gw.stop()


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


def test_proxy_credentials_never_reach_logs_or_audit(gateway):
    audit = gateway.workdir / "audit.jsonl"
    assert audit.exists() and "rest_tools" in audit.read_text()
    for text in (gateway.log(), audit.read_text()):
        assert PROXY_PASSWORD not in text and "not-the-password" not in text
        assert "Z2F0ZXdheTpwcm94eS1wdy0zZjlhMWM3N2Uy" not in text  # base64 of user:password


def test_a_listener_with_its_own_proxy_is_refused():
    from mcpgw.policy.models import Policy

    with pytest.raises(ValueError, match="proxy of each tagged route"):
        Policy.model_validate({"services": {"s": {"url": "http://127.0.0.1:9"}}, "routes": {
            "t": {"service": "s", "paths": ["/t"], "rest_tools": {"mode": "conversion-only", "tags": ["x"],
                                                                  "tools": [tool("a", "a")]}},
            "l": {"service": "s", "paths": ["/l"], "rest_tools": {"mode": "listener", "server": {"tag": "x"},
                                                                  "proxy": {"http_proxy_host": "p", "http_proxy_port": 1}}}}})
