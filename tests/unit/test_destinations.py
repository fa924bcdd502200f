"""destinations.py: intercept-mode requests are placed by where they go, not by the name they use.

The system resolver is replaced by a table (`FakeDNS`): DNS is not what is tested here, the
gateway's use of it is (caching, sharing, failing closed, pinning). The addon tests drive the real
hooks with mitmproxy's test helpers."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from mitmproxy import connection
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy import context as proxy_context, layer, layers, server_hooks
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from mcpgw import context
from mcpgw.addon import MCPGateway
from mcpgw.destinations import LOCAL, Destinations, Resolver, Unresolvable, normal_address
from mcpgw.policy.models import Policy
from mcpgw.policy.store import Snapshot
from mcpgw.routing import RouteTable

VENDOR_IP, OTHER_IP = "203.0.113.7", "198.51.100.9"
POLICY = """
services:
  vendor: {url: "https://mcp.vendor.example/mcp"}
  local: {url: "http://127.0.0.1:8931/mcp"}
routes:
  vendor: {service: vendor, paths: [/vendor], key_auth: {}}
  local: {service: local, paths: [/local], key_auth: {}}
consumers:
  dev: {keys: [dev-key]}
"""
_versions = itertools.count(1)


class FakeDNS:
    def __init__(self, table: dict[str, list[str]], delay: float = 0.0):
        self.table, self.delay, self.asked = table, delay, []

    async def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        if self.delay:
            await asyncio.sleep(self.delay)
        if host not in self.table:
            raise OSError("Name or service not known")
        return list(self.table[host])


DNS = {"mcp.vendor.example": [VENDOR_IP, "2001:db8::7"], "vendor-alias.example": [VENDOR_IP],
       "v6-alias.example": ["2001:db8::7"], "elsewhere.example": [OTHER_IP], "localhost": ["127.0.0.1", "::1"],
       "rebinding.example": [OTHER_IP]}


def snapshot(text: str = POLICY) -> Snapshot:
    import yaml

    policy = Policy.model_validate(yaml.safe_load(text))
    return Snapshot(policy, RouteTable(policy), "test", next(_versions), "test", ())


class Store:
    def __init__(self, snap: Snapshot):
        self.current = snap


def destinations(dns: FakeDNS, snap: Snapshot | None = None) -> Destinations:
    return Destinations(Store(snap or snapshot()), Resolver(lookup=dns))


# -- addresses and the resolver -------------------------------------------------------------------


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1", LOCAL), ("127.0.0.5", LOCAL), ("::1", LOCAL), ("0.0.0.0", LOCAL), ("::", LOCAL),
    ("::ffff:127.0.0.1", LOCAL), ("::ffff:203.0.113.7", VENDOR_IP), ("203.0.113.7", VENDOR_IP),
    ("2001:DB8:0:0::7", "2001:db8::7"), ("fe80::1%eth0", "fe80::1"),
])
def test_one_spelling_per_reachable_address(address, expected):
    assert normal_address(address) == expected


async def test_lookups_are_cached_and_shared():
    dns = FakeDNS(DNS, delay=0.05)
    resolver = Resolver(lookup=dns)
    results = await asyncio.gather(*(resolver.resolve("vendor-alias.example") for _ in range(10)))
    assert {r.normal for r in results} == {frozenset({VENDOR_IP})} and dns.asked == ["vendor-alias.example"]
    await resolver.resolve("vendor-alias.example")
    assert len(dns.asked) == 1
    assert (await resolver.resolve("vendor-alias.example", fresh=True)).raw == (VENDOR_IP,)
    assert len(dns.asked) == 2


async def test_failures_are_remembered_briefly_and_literals_never_looked_up():
    dns = FakeDNS(DNS)
    resolver = Resolver(lookup=dns, failure_ttl=60)
    for _ in range(3):
        with pytest.raises(Unresolvable, match="cannot resolve 'nowhere.example'"):
            await resolver.resolve("nowhere.example")
    assert dns.asked == ["nowhere.example"]
    assert (await resolver.resolve("[::ffff:127.0.0.1]")).normal == {LOCAL}
    assert (await resolver.resolve("203.0.113.7")).raw == (VENDOR_IP,)
    assert dns.asked == ["nowhere.example"]


async def test_a_slow_resolver_fails_closed():
    resolver = Resolver(lookup=FakeDNS(DNS, delay=1), timeout=0.05)
    with pytest.raises(Unresolvable) as refused:
        await resolver.resolve("vendor-alias.example")
    assert refused.value.status == 502


async def test_the_cache_is_bounded_and_expires():
    dns = FakeDNS({f"h{i}.example": ["192.0.2.1"] for i in range(10)})
    resolver = Resolver(lookup=dns, size=4, ttl=0)
    for i in range(10):
        await resolver.resolve(f"h{i}.example")
    assert len(resolver._cache) == 4
    await resolver.resolve("h9.example")
    assert dns.asked.count("h9.example") == 2  # ttl 0: every lookup asks again


# -- which origin a request is for ----------------------------------------------------------------

VENDOR = ("https", "mcp.vendor.example", 443)
LOCAL_ORIGIN = ("http", "127.0.0.1", 8931)


@pytest.mark.parametrize("scheme, host, port, expected", [
    ("https", "mcp.vendor.example", 443, (VENDOR,)),
    ("https", "MCP.Vendor.Example.", 443, (VENDOR,)),
    ("https", "vendor-alias.example", 443, (VENDOR,)),  # a CNAME or second name of the vendor
    ("https", VENDOR_IP, 443, (VENDOR,)),  # its address
    ("https", "::ffff:203.0.113.7", 443, (VENDOR,)),
    ("https", "v6-alias.example", 443, (VENDOR,)),
    ("https", "2001:db8:0::7", 443, (VENDOR,)),
    ("http", "localhost", 8931, (LOCAL_ORIGIN,)),
    ("http", "127.1", 8931, (LOCAL_ORIGIN,)),  # getaddrinfo accepts it; the table stands in for it here
    ("http", "0.0.0.0", 8931, (LOCAL_ORIGIN,)),
    ("http", "::1", 8931, (LOCAL_ORIGIN,)),
    ("https", "elsewhere.example", 443, ()),
    ("http", "vendor-alias.example", 443, ()),  # another scheme: another origin
    ("https", "vendor-alias.example", 8443, ()),  # another port
    ("https", "localhost", 8931, ()),
])
async def test_requests_are_placed_by_destination(scheme, host, port, expected):
    dns = FakeDNS({**DNS, "127.1": ["127.0.0.1"]})
    d = destinations(dns)
    assert await d.origins(d.store.current, scheme, host, port) == expected


async def test_pass_through_on_other_ports_resolves_nothing():
    dns = FakeDNS(DNS)
    d = destinations(dns)
    assert await d.origins(d.store.current, "https", "elsewhere.example", 8443) == ()
    assert await d.origins(d.store.current, "https", "mcp.vendor.example", 443) == (VENDOR,)
    await asyncio.sleep(0)  # the background refresh the literal match started
    assert "elsewhere.example" not in dns.asked


async def test_unresolvable_names_on_a_governed_port_fail_closed():
    d = destinations(FakeDNS(DNS))
    with pytest.raises(Unresolvable) as refused:
        await d.origins(d.store.current, "https", "nowhere.example", 443)
    assert refused.value.status == 502


async def test_a_service_that_never_resolved_closes_its_port_to_other_names():
    dns = FakeDNS({k: v for k, v in DNS.items() if k != "mcp.vendor.example"})
    d = destinations(dns)
    snap = d.store.current
    assert await d.origins(snap, "https", "mcp.vendor.example", 443) == (VENDOR,)  # its own name still works
    with pytest.raises(Unresolvable) as refused:
        await d.origins(snap, "https", "elsewhere.example", 443)
    assert refused.value.status == 503
    dns.table["mcp.vendor.example"] = [VENDOR_IP]
    await d.refresh(snap)
    assert await d.origins(snap, "https", "elsewhere.example", 443) == ()
    del dns.table["mcp.vendor.example"]  # later failures keep the last good addresses
    await d.refresh(snap)
    assert await d.origins(snap, "https", "vendor-alias.example", 443) == (VENDOR,)


async def test_origins_sharing_an_address_are_all_candidates():
    text = POLICY.replace("services:\n", "services:\n  legacy: {url: \"http://localhost:8931\"}\n")
    text = text.replace("routes:\n", "routes:\n  legacy: {service: legacy, paths: [/legacy]}\n")
    snap = snapshot(text)
    d = destinations(FakeDNS(DNS), snap)
    await d.refresh(snap)
    assert await d.origins(snap, "http", "127.0.0.1", 8931) == (LOCAL_ORIGIN, ("http", "localhost", 8931))


# -- the addon: routing on the canonical target and the destination -------------------------------


@pytest.fixture
def gateway(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    addon = MCPGateway()
    addon.destinations.resolver = Resolver(lookup=FakeDNS(DNS))
    with taddons.context(Proxyserver(), addon) as tctx:
        tctx.configure(addon, mcp_policy=str(path), keep_host_header=True)
        yield addon


def intercept_flow(url: str, method: str = "POST", host_header: str | None = None):
    f = tflow.tflow()
    f.client_conn.proxy_mode = ProxyMode.parse("regular")
    f.request.url = url
    f.request.method = method
    if host_header is not None:
        f.request.headers["Host"] = host_header
    f.request.headers["Content-Type"] = "application/json"
    f.request.content = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    return f


async def test_an_alias_is_governed_and_sent_to_the_service(gateway):
    f = intercept_flow("https://vendor-alias.example/%6Dcp", host_header="elsewhere.example")
    await gateway.requestheaders(f)
    assert f.response.status_code == 401  # key-auth of the vendor route, not a pass-through
    f = intercept_flow("https://vendor-alias.example/%6Dcp", host_header="elsewhere.example")
    f.request.headers["apikey"] = "dev-key"
    await gateway.requestheaders(f)
    await gateway.request(f)
    assert f.response is None and context.get(f).route_name == "vendor"
    assert (f.request.host, f.request.port, f.request.path) == ("mcp.vendor.example", 443, "/mcp")
    assert f.request.headers["Host"] == "mcp.vendor.example"  # not the vhost the client named


@pytest.mark.parametrize("url, status, error", [
    ("https://mcp.vendor.example/mcp%2Fx", 400, "bad_request_target"),
    ("https://mcp.vendor.example/mcp/..%5cx", 400, "bad_request_target"),
    ("https://vendor-alias.example/other", 403, "unrouted_path"),
    ("https://mcp.vendor.example/MCP", 403, "unrouted_path"),
    ("https://mcp.vendor.example/x/%2e%2e/sse", 403, "unrouted_path"),
    ("https://nowhere.example/mcp", 502, "unknown_destination"),
])
async def test_governed_origins_refuse_what_they_cannot_route(gateway, url, status, error):
    f = intercept_flow(url)
    await gateway.requestheaders(f)
    assert f.response.status_code == status and f.response.json()["error"] == error


async def test_other_origins_pass_untouched(gateway):
    f = intercept_flow("https://elsewhere.example/%6Dcp/..%2f")
    await gateway.requestheaders(f)
    await gateway.request(f)
    assert f.response is None and context.get(f) is None and f.request.path == "/%6Dcp/..%2f"


async def test_only_a_read_of_the_exact_prm_path_skips_identity(gateway):
    read = intercept_flow("https://vendor-alias.example/.well-known/oauth-protected-resource/mcp", method="GET")
    read.request.content = b""
    await gateway.requestheaders(read)
    assert read.response is None and context.get(read).match.kind == "prm"
    for url in ("https://mcp.vendor.example/.well-known/oauth-protected-resource/mcp",
                "https://mcp.vendor.example/.well-known/oauth-protected-resource/x/%2e%2e/mcp"):
        post = intercept_flow(url)
        await gateway.requestheaders(post)
        assert post.response.status_code == 401 and context.get(post).match.kind == "mcp"


# -- where mitmproxy connects ---------------------------------------------------------------------


def connect_data(host: str, port: int, mode: str = "regular") -> server_hooks.ServerConnectionHookData:
    client = tflow.tclient_conn()
    client.proxy_mode = ProxyMode.parse(mode)
    return server_hooks.ServerConnectionHookData(client=client, server=connection.Server(address=(host, port)))


async def test_pass_through_connections_are_pinned_to_the_checked_address():
    dns = FakeDNS(DNS)
    d = destinations(dns)
    data = connect_data("rebinding.example", 443)
    await d.server_connect(data)
    assert data.server.error is None and data.server.address == (OTHER_IP, 443)
    d.server_connected(data)
    assert data.server.address == ("rebinding.example", 443)  # reuse, SNI and logs go by the name
    dns.table["rebinding.example"] = [VENDOR_IP]  # rebinding: too late for the connection above
    d.resolver._cache.clear()
    data = connect_data("rebinding.example", 443)
    await d.server_connect(data)
    assert data.server.error and "governed" in data.server.error


@pytest.mark.parametrize("host, port, refused", [
    ("vendor-alias.example", 443, True),  # a governed address under a name no governed flow uses
    ("nowhere.example", 443, True),  # cannot tell
    ("mcp.vendor.example", 443, False),  # the service's own name: only governed flows go there
    ("elsewhere.example", 443, False),
    ("nowhere.example", 8443, False),  # not a governed port: left to mitmproxy
])
async def test_connections_that_reach_a_governed_service_unchecked_are_refused(host, port, refused):
    d = destinations(FakeDNS(DNS))
    data = connect_data(host, port)
    await d.server_connect(data)
    assert bool(data.server.error) is refused
    gateway_listener = connect_data(host, port, "reverse:http://127.0.0.1:9")
    await d.server_connect(gateway_listener)
    assert gateway_listener.server.error is None


@pytest.mark.parametrize("host, port, refused", [
    ("mcp.vendor.example", 443, True), (VENDOR_IP, 443, True), ("127.0.0.1", 8931, True),
    ("elsewhere.example", 443, False), ("127.0.0.1", 9999, False),
])
async def test_raw_tunnels_to_governed_destinations_are_refused(host, port, refused):
    d = destinations(FakeDNS(DNS))
    with taddons.context() as tctx:
        client = tflow.tclient_conn()
        client.proxy_mode = ProxyMode.parse("regular")
        ctx = proxy_context.Context(client, tctx.options)
        ctx.server = connection.Server(address=(host, port))
        nextlayer = layer.NextLayer(ctx)
        nextlayer.layer = layers.TCPLayer(ctx)
        await d.next_layer(nextlayer)
        assert (type(nextlayer.layer).__name__ == "_Refused") is refused
        http_layer = layers.HttpLayer(ctx, layers.http.HTTPMode.transparent)
        nextlayer.layer = http_layer
        await d.next_layer(nextlayer)
        assert nextlayer.layer is http_layer  # HTTP goes through the pipeline
