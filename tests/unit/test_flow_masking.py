"""Stored credentials in the flows mitmproxy keeps, on every way a flow ends (addon.error/update/done)."""

from __future__ import annotations

import pytest
from mitmproxy import flow as mflow
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from mcpgw.addon import MCPGateway

STORED = "stored-service-token-4411"
POLICY = """
services:
  up: {url: "http://127.0.0.1:1/mcp"}
routes:
  swap:
    service: up
    paths: [/swap]
    credentials:
      mode: inject
      allow_anonymous: true
      add: {headers: ["Authorization:Bearer {env://MCPGW_TEST_STORED}"], querystring: ["token:{env://MCPGW_TEST_STORED}"]}
"""


@pytest.fixture
def gateway(tmp_path, monkeypatch):
    monkeypatch.setenv("MCPGW_TEST_STORED", STORED)
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    addon = MCPGateway()
    with taddons.context(Proxyserver(), addon) as tctx:
        tctx.configure(addon, mcp_policy=str(path), keep_host_header=True)
        yield addon


async def sent(addon: MCPGateway) -> tflow.HTTPFlow:
    """A governed flow whose request went upstream with the stored credential."""
    f = tflow.tflow()
    f.client_conn.proxy_mode = ProxyMode.parse("reverse:http://127.0.0.1:9@8443")
    f.client_conn.timestamp_tls_setup = None
    f.request.method, f.request.path, f.request.host, f.request.port = "POST", "/swap", "127.0.0.1", 9
    f.request.headers["Host"] = "localhost:8443"
    f.request.headers["Content-Type"] = "application/json"
    f.request.content = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    await addon.requestheaders(f)
    await addon.request(f)
    assert f.response is None and STORED in f.request.headers["Authorization"] and STORED in f.request.path
    return f


def leaks(f) -> bool:
    return STORED in repr(f.get_state())


async def test_a_flow_ending_in_an_error_is_masked(gateway):
    f = await sent(gateway)
    f.error = mflow.Error("Connect call failed")
    gateway.error(f)
    assert not leaks(f)


async def test_a_killed_flow_is_masked_when_mitmproxy_tells_addons(gateway):
    f = await sent(gateway)
    gateway.update([f])  # mitmweb marking a live flow: it may still be sent, leave it alone
    assert leaks(f)
    f.kill()
    gateway.update([f])
    assert not leaks(f)


async def test_flows_in_flight_at_shutdown_are_masked(gateway):
    f = await sent(gateway)
    gateway.done()
    assert not leaks(f)


async def test_ungoverned_flows_are_not_touched(gateway):
    f = tflow.tflow()
    f.request.headers["Authorization"] = "Bearer the-users-own-token"
    f.error = mflow.Error("Connect call failed")
    gateway.error(f)
    assert f.request.headers["Authorization"] == "Bearer the-users-own-token"
