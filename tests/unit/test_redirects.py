"""Location and Content-Location from the upstream (redirects.py), on mitmproxy test flows: into
the route's upstream they name the gateway, outside it they go, elsewhere they stay."""

from __future__ import annotations

import itertools

import pytest
from mitmproxy import http
from mitmproxy.test import tflow

from mcpgw import forwarding, pipeline
from mcpgw.context import FlowContext
from mcpgw.policy.models import Policy
from mcpgw.policy.store import Snapshot
from mcpgw.routing import RouteTable

_versions = itertools.count(1)
POLICY = {
    "services": {"mcp": {"url": "http://127.0.0.1:8931/mcp"}, "root": {"url": "http://127.0.0.1:8931"},
                 "vendor": {"url": "https://mcp.vendor.example/v1/mcp"}},
    "routes": {"github-mcp": {"service": "mcp", "paths": ["/github-mcp"]},
               "legacy": {"service": "root", "paths": ["/github-legacy"]},
               "kept": {"service": "root", "paths": ["/kept"], "strip_path": False},
               "vendor": {"service": "vendor", "paths": ["/vendor"]}},
}


@pytest.fixture(scope="module")
def snap() -> Snapshot:
    policy = Policy.model_validate(POLICY)
    return Snapshot(policy, RouteTable(policy), "test", next(_versions), "test", ())


def forwarded(snap: Snapshot, path: str, location: list[tuple[str, str]], status: int = 307,
              host: str = "localhost:8443") -> tuple[FlowContext, http.HTTPFlow]:
    """A gateway-mode request forwarded as forwarding.forward does, and the upstream's answer."""
    flow = tflow.tflow(req=http.Request.make("POST", f"http://{host}{path}", b"{}", {"host": host}))
    ctx = FlowContext(snap, "gateway", snap.routes.match_gateway(path), frozenset({"localhost"}), host, "http")
    forwarding.forward(ctx, flow)
    flow.response = http.Response.make(status, b"", [(k.encode(), v.encode()) for k, v in location])
    return ctx, flow


def answer(ctx: FlowContext, flow: http.HTTPFlow) -> http.Response:
    assert pipeline.run_sync(pipeline.RESPONSE_HEADER_PHASES, ctx, flow) is None
    return flow.response


@pytest.mark.parametrize("path, location, expected", [
    # Starlette's trailing-slash redirect, absolute, relative and scheme-relative
    ("/github-mcp/", "http://127.0.0.1:8931/mcp", "http://localhost:8443/github-mcp"),
    ("/github-mcp/", "/mcp", "http://localhost:8443/github-mcp"),
    ("/github-mcp/", "//127.0.0.1:8931/mcp", "http://localhost:8443/github-mcp"),
    ("/github-mcp/x", "../mcp/y?a=1#f", "http://localhost:8443/github-mcp/y?a=1#f"),
    # another name of the same local server, and the host's case
    ("/github-mcp/", "http://localhost:8931/mcp", "http://localhost:8443/github-mcp"),
    ("/github-mcp/", "HTTP://127.0.0.1:8931/mcp/sub", "http://localhost:8443/github-mcp/sub"),
    ("/github-legacy/sse/", "http://127.0.0.1:8931/sse", "http://localhost:8443/github-legacy/sse"),
    ("/kept/a/", "http://127.0.0.1:8931/kept/a", "http://localhost:8443/kept/a"),
    ("/vendor/", "https://mcp.vendor.example/v1/mcp", "http://localhost:8443/vendor"),
])
def test_a_location_into_the_upstream_names_the_gateway(snap, path, location, expected):
    for name in ("Location", "Content-Location"):
        ctx, flow = forwarded(snap, path, [(name, location)])
        assert answer(ctx, flow).headers.get_all(name) == [expected]


@pytest.mark.parametrize("path, location", [
    ("/github-mcp/", "http://127.0.0.1:8931/admin"),  # the upstream, outside the service path
    ("/github-mcp/", "/other"),
    ("/kept/a/", "http://127.0.0.1:8931/elsewhere"),  # strip_path: false, a prefix the route does not answer
    ("/github-mcp/", "http://127.0.0.1:99999/mcp"),  # unparseable: may name the upstream
    ("/github-mcp/", "http://[::1/mcp"),
])
def test_a_location_on_the_upstream_this_route_cannot_reach_is_removed(snap, path, location):
    ctx, flow = forwarded(snap, path, [("Location", location), ("Content-Location", location)])
    response = answer(ctx, flow)
    assert "location" not in response.headers and "content-location" not in response.headers


@pytest.mark.parametrize("location", [
    "https://github.com/login/oauth/authorize?x=1",
    "http://127.0.0.1:8932/mcp",  # another port: another server
    "https://127.0.0.1:8931/mcp",  # another scheme
    "mailto:someone@example.com",
])
def test_a_location_elsewhere_is_left_alone(snap, location):
    ctx, flow = forwarded(snap, "/github-mcp", [("Location", location)], status=302)
    assert answer(ctx, flow).headers["Location"] == location


def test_the_gateway_url_follows_the_host_the_client_used(snap):
    ctx, flow = forwarded(snap, "/github-mcp/", [("Location", "http://127.0.0.1:8931/mcp")], host="127.0.0.1:18443")
    assert answer(ctx, flow).headers["Location"] == "http://127.0.0.1:18443/github-mcp"


def test_other_headers_and_their_order_stay(snap):
    ctx, flow = forwarded(snap, "/github-mcp/", [("X-A", "1"), ("Location", "http://127.0.0.1:8931/mcp"), ("X-B", "2")])
    response = answer(ctx, flow)
    assert response.headers.get_all("x-a") == ["1"] and response.headers.get_all("x-b") == ["2"]
    assert response.headers["location"] == "http://localhost:8443/github-mcp"


def test_the_gateways_own_answers_and_intercept_mode_are_untouched(snap):
    ctx, flow = forwarded(snap, "/github-mcp/", [("Location", "http://127.0.0.1:8931/mcp")])
    ctx.upstream_set = False  # an answer the gateway wrote itself
    assert answer(ctx, flow).headers["Location"] == "http://127.0.0.1:8931/mcp"
    flow = tflow.tflow(req=http.Request.make("POST", "http://127.0.0.1:8931/mcp/", b"{}"))
    ctx = FlowContext(snap, "intercept", snap.routes.match_intercept("http", "127.0.0.1", 8931, "/mcp/"))
    flow.response = http.Response.make(307, b"", {"Location": "http://127.0.0.1:8931/mcp"})
    assert answer(ctx, flow).headers["Location"] == "http://127.0.0.1:8931/mcp"  # the client's own URL
