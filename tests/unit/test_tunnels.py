"""tunnels.py: under `intercept_unmatched: block` a CONNECT opens only to a governed destination,
with mitmproxy's test flows and a table for DNS (tests/unit/test_destinations.py's)."""

from __future__ import annotations

import json

import pytest
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow

from mcpgw.tunnels import TunnelGate
from tests.unit.test_destinations import DNS, POLICY, FakeDNS, Store, destinations, snapshot

BLOCK = "gateway: {intercept_unmatched: block}\n" + POLICY


def gate(policy: str = BLOCK, dns: dict | None = None) -> TunnelGate:
    store = Store(snapshot(policy) if policy else None)
    found = destinations(FakeDNS(dns or DNS), store.current if policy else snapshot())
    found.store = store
    return TunnelGate(store, found)


def connect(authority: str, mode: str = "regular"):
    host, _, port = authority.rpartition(":")
    f = tflow.tflow()
    f.client_conn.proxy_mode = ProxyMode.parse(mode)
    f.request = tflow.treq(method=b"CONNECT", host=host, port=int(port), path=b"", authority=authority.encode())
    f.response = None
    return f


@pytest.mark.parametrize("authority", ["mcp.vendor.example:443", "vendor-alias.example:443", "127.0.0.1:8931",
                                       "localhost:8931"])
async def test_a_tunnel_to_a_governed_destination_opens(authority):
    f = connect(authority)
    await gate().http_connect(f)
    assert f.response is None


@pytest.mark.parametrize("authority", ["127.0.0.1:6379", "elsewhere.example:443", "127.0.0.1:22",
                                       "mcp.vendor.example:8443"])
async def test_a_tunnel_anywhere_else_is_refused(authority):
    f = connect(authority)
    await gate().http_connect(f)
    assert f.response.status_code == 403 and "not governed" in json.loads(f.response.content)["message"]


async def test_pass_mode_and_gateway_listeners_are_left_alone():
    f = connect("127.0.0.1:6379")
    await gate(POLICY).http_connect(f)
    assert f.response is None
    f = connect("127.0.0.1:6379", mode="reverse:http://127.0.0.1:9@8443")
    await gate().http_connect(f)
    assert f.response is None


async def test_it_fails_closed():
    f = connect("127.0.0.1:6379")
    await gate(policy="").http_connect(f)  # no policy loaded
    assert f.response.status_code == 503
    broken = gate()

    async def origins(*_):
        raise RuntimeError("boom")

    broken.destinations.origins = origins
    f = connect("127.0.0.1:8931")
    await broken.http_connect(f)
    assert f.response.status_code == 502
    f = connect("unknown.example:443")  # a name on a governed port that does not resolve
    await gate().http_connect(f)
    assert f.response.status_code in (502, 503)
