"""OAuth discovery (identity/prm.py): the challenge, the served and the rewritten Protected Resource
Metadata, and upstream challenges pointed at the gateway, on mitmproxy test flows."""

from __future__ import annotations

import gzip
import itertools
import json

import pytest
from mitmproxy import http
from mitmproxy.test import tflow

from mcpgw import pipeline
from mcpgw.context import FlowContext
from mcpgw.identity import prm
from mcpgw.policy.models import Policy
from mcpgw.policy.store import Snapshot
from mcpgw.routing import RouteTable

UPSTREAM_PRM = "https://api.githubcopilot.com/.well-known/oauth-protected-resource/mcp"
UPSTREAM_DOC = {"resource": "https://api.githubcopilot.com/mcp", "authorization_servers": ["https://github.com/login/oauth"],
                "scopes_supported": ["repo", "gist"], "bearer_methods_supported": ["header"], "resource_name": "GitHub"}
OAUTH = {"authorization_servers": ["https://idp.example/realms/demo"], "jwks_endpoint": "https://idp.example/jwks",
         "scopes_supported": ["openid", "mcp"]}
_versions = itertools.count(1)


GATEWAY_URLS = ["https://gateway.example.com", "https://gateway.example.com:9443", "https://gw.example"]


def snapshot(prm_settings: dict | None = None, **route) -> Snapshot:
    policy = Policy.model_validate({
        "gateway": {"urls": GATEWAY_URLS},
        "services": {"gh": {"url": "https://api.githubcopilot.com/mcp"}, "root": {"url": "http://127.0.0.1:8931"}},
        "routes": {"gh": {"service": "gh", "paths": ["/github-mcp"], "prm": prm_settings, **route},
                   "plain": {"service": "root", "paths": ["/plain"]}},
    })
    return Snapshot(policy, RouteTable(policy), "test", next(_versions), "test", ())


def gateway_flow(snap: Snapshot, path: str, headers: list[tuple[str, str]] = (), *, method: str = "GET",
                 scheme: str = "http", host: str = "localhost:8443") -> tuple[FlowContext, http.HTTPFlow]:
    fields = [(k.encode(), v.encode()) for k, v in [("host", host), *headers]]
    flow = tflow.tflow(req=http.Request.make(method, f"{scheme}://{host}{path}", b"", http.Headers(fields)))
    flow.client_conn.sockname = ("127.0.0.1", 8443)  # the gateway listener it came in on
    ctx = FlowContext(snap, "gateway", snap.routes.match_gateway(path), frozenset({"localhost"}), host, scheme)
    return ctx, flow


def intercept_flow(snap: Snapshot, url: str, headers: list[tuple[str, str]] = (), *, method: str = "POST",
                   body: bytes = b"{}") -> tuple[FlowContext, http.HTTPFlow]:
    flow = tflow.tflow(req=http.Request.make(method, url, body, http.Headers(
        [(k.encode(), v.encode()) for k, v in headers])))
    req = flow.request
    ctx = FlowContext(snap, "intercept", snap.routes.match_intercept(req.scheme, req.host, req.port, req.path),
                      frozenset(), req.host_header, req.scheme)
    return ctx, flow


def upstream_answers(flow: http.HTTPFlow, status: int, body: bytes, headers: dict[str, str]) -> None:
    """`body` as it comes over the wire (already encoded per Content-Encoding)."""
    flow.response = http.Response.make(status, b"", headers)
    flow.response.raw_content = body


def run_response(ctx: FlowContext, flow: http.HTTPFlow) -> http.Response:
    """The response hooks as the addon runs them."""
    for phases in (pipeline.RESPONSE_HEADER_PHASES, pipeline.RESPONSE_PHASES):
        if (replacement := pipeline.run_sync(phases, ctx, flow)) is not None:
            flow.response = replacement
    return flow.response


# -- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings, expected", [
    ({"mode": "serve"}, "needs authorization_servers"),
    ({"mode": "rewrite", "authorization_servers": ["https://a.example"]}, "cannot be used with mode: rewrite"),
    ({"mode": "serve", "authorization_servers": ["https://a"], "upstream_url": "https://x/y"}, "upstream_url cannot be used"),
    ({"upstream_url": "/relative"}, "absolute http"),
    ({"mode": "serve", "authorization_servers": ["github.com"]}, "absolute http"),
    ({"mode": "serve", "authorization_servers": ["https://a"], "metadata": {"resource": "x"}}, "not under metadata"),
    ({"mode": "proxy"}, "'rewrite' or 'serve'"),
    ({"challenge": True, "realm": "x"}, "Extra inputs"),
])
def test_invalid_settings(settings, expected):
    with pytest.raises(ValueError, match=expected):
        snapshot(settings)


def test_default_upstream_url_follows_rfc_9728():
    snap = snapshot({})
    found = prm._discovery(snap.policy)
    assert found["gh"].upstream_url == UPSTREAM_PRM
    assert "plain" not in found
    assert prm.upstream_metadata_url(snap.policy.services["root"]) == "http://127.0.0.1:8931/.well-known/oauth-protected-resource"


# -- serve ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme, host", [("http", "localhost:8443"), ("https", "gateway.example.com"),
                                          ("https", "gateway.example.com:9443")])
async def test_served_document_uses_the_listener_the_client_came_in_on(scheme, host):
    snap = snapshot({"mode": "serve", "authorization_servers": ["https://idp.example"], "scopes_supported": ["mcp"],
                     "metadata": {"resource_name": "GitHub via gateway"}})
    ctx, flow = gateway_flow(snap, "/.well-known/oauth-protected-resource/github-mcp", scheme=scheme, host=host)
    response = await pipeline.run(pipeline.header_phases(ctx) + pipeline.request_phases(ctx), ctx, flow)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert json.loads(response.content) == {
        "resource": f"{scheme}://{host}/github-mcp", "authorization_servers": ["https://idp.example"],
        "scopes_supported": ["mcp"], "bearer_methods_supported": ["header"], "resource_name": "GitHub via gateway"}
    assert not ctx.upstream_set
    flow.response = response
    assert run_response(ctx, flow) is response  # the gateway's own answer is not treated as the upstream's


async def test_served_document_from_the_oauth_settings():
    snap = snapshot(None, oauth=OAUTH)
    ctx, flow = gateway_flow(snap, "/.well-known/oauth-protected-resource/github-mcp/")
    doc = json.loads((await pipeline.run(pipeline.header_phases(ctx) + pipeline.request_phases(ctx), ctx, flow)).content)
    assert doc == {"resource": "http://localhost:8443/github-mcp", "authorization_servers": OAUTH["authorization_servers"],
                   "scopes_supported": ["openid", "mcp"], "bearer_methods_supported": ["header"]}
    # An explicit prm fills in only what it leaves out.
    snap = snapshot({"mode": "serve", "challenge": True, "resource": "https://mcp.example/github"}, oauth=OAUTH)
    ctx, flow = gateway_flow(snap, "/.well-known/oauth-protected-resource/github-mcp")
    doc = json.loads((await pipeline.run(pipeline.header_phases(ctx) + pipeline.request_phases(ctx), ctx, flow)).content)
    assert doc["resource"] == "https://mcp.example/github" and doc["authorization_servers"] == OAUTH["authorization_servers"]


async def test_attack_served_resource_never_follows_an_unknown_host():
    """Issue 11 item 9, discovery side: `Host: localhost:9443` (not this gateway's) names no
    resource; the document names one the OAuth phase accepts as a token's audience."""
    from mcpgw.identity import resource

    snap = snapshot(None, oauth=OAUTH)
    ctx, flow = gateway_flow(snap, "/.well-known/oauth-protected-resource/github-mcp", host="localhost:9443")
    doc = json.loads((await pipeline.run(pipeline.header_phases(ctx) + pipeline.request_phases(ctx), ctx, flow)).content)
    assert doc["resource"] == "https://gateway.example.com/github-mcp"
    assert doc["resource"] in resource.candidates(ctx, flow, None)
    assert "http://localhost:9443/github-mcp" not in resource.candidates(ctx, flow, None)


async def test_only_get_and_only_routes_with_discovery():
    snap = snapshot({"mode": "serve", "authorization_servers": ["https://idp.example"]})
    ctx, flow = gateway_flow(snap, "/.well-known/oauth-protected-resource/github-mcp", method="POST")
    response = await pipeline.run(pipeline.header_phases(ctx) + pipeline.request_phases(ctx), ctx, flow)
    assert response.status_code == 405 and response.headers["Allow"] == "GET"
    ctx, flow = gateway_flow(snap, "/.well-known/oauth-protected-resource/plain")
    response = await pipeline.run(pipeline.header_phases(ctx) + pipeline.request_phases(ctx), ctx, flow)
    assert response.status_code == 404 and not ctx.upstream_set


# -- rewrite -------------------------------------------------------------------------------------


async def test_rewrite_fetches_the_upstream_document_without_client_credentials():
    snap = snapshot({})
    ctx, flow = gateway_flow(snap, "/.well-known/oauth-protected-resource/github-mcp?x=1", [
        ("authorization", "Bearer gho_secret"), ("cookie", "session=1"), ("apikey", "dev-api-key"),
        ("x-api-key", "k"), ("proxy-authorization", "Basic x"), ("accept", "application/json"),
        ("mcp-protocol-version", "2025-06-18"), ("user-agent", "python-httpx")])
    assert await pipeline.run(pipeline.header_phases(ctx) + pipeline.request_phases(ctx), ctx, flow) is None
    req = flow.request
    assert ctx.upstream_set and req.url == UPSTREAM_PRM and req.method == "GET"
    assert req.host_header == "api.githubcopilot.com"
    assert sorted(k.lower() for k in req.headers) == ["accept", "host", "mcp-protocol-version", "user-agent"]


def test_rewrite_to_a_configured_upstream_url():
    snap = snapshot({"upstream_url": "http://127.0.0.1:9000/prm/github"})
    ctx, flow = gateway_flow(snap, "/.well-known/oauth-protected-resource/github-mcp")
    prm.serve_metadata(ctx, flow)
    assert flow.request.url == "http://127.0.0.1:9000/prm/github" and flow.request.host_header == "127.0.0.1:9000"


@pytest.mark.parametrize("scheme, host", [("http", "localhost:8443"), ("https", "gw.example")])
async def test_rewrite_replaces_resource_and_keeps_everything_else_in_order(scheme, host):
    snap = snapshot({})
    ctx, flow = gateway_flow(snap, "/.well-known/oauth-protected-resource/github-mcp", scheme=scheme, host=host)
    await pipeline.run(pipeline.header_phases(ctx) + pipeline.request_phases(ctx), ctx, flow)
    upstream_answers(flow, 200, json.dumps(UPSTREAM_DOC).encode(),
                     {"content-type": "application/json; charset=utf-8", "etag": '"abc"'})
    prm.buffer_upstream_metadata(ctx, flow)
    assert flow.response.stream is False
    response = run_response(ctx, flow)
    doc = json.loads(response.content)
    assert list(doc) == list(UPSTREAM_DOC)
    assert doc == {**UPSTREAM_DOC, "resource": f"{scheme}://{host}/github-mcp"}
    assert "etag" not in response.headers and response.headers["content-length"] == str(len(response.content))


def test_rewrite_with_a_fixed_resource_compressed_and_without_resource():
    snap = snapshot({"resource": "https://mcp.example.com/github"})
    ctx, flow = gateway_flow(snap, "/.well-known/oauth-protected-resource/github-mcp")
    prm.serve_metadata(ctx, flow)
    body = {k: v for k, v in UPSTREAM_DOC.items() if k != "resource"}
    upstream_answers(flow, 200, gzip.compress(json.dumps(body).encode()),
                     {"content-type": "application/json", "content-encoding": "gzip"})
    doc = json.loads(run_response(ctx, flow).get_content())
    assert doc == {"resource": "https://mcp.example.com/github", **body} and next(iter(doc)) == "resource"


@pytest.mark.parametrize("status, body, ctype, problem", [
    (404, b'{"message":"Not Found"}', "application/json", "HTTP 404"),
    (401, b"{}", "application/json", "HTTP 401"),
    (200, b"<html></html>", "text/html", "not JSON"),
    (200, b"{not json", "application/json", "invalid JSON"),
    (200, b'["resource"]', "application/json", "not a JSON object"),
    (200, b'{"a":"' + b"x" * prm.MAX_DOCUMENT_SIZE + b'"}', "application/json", "too large"),
])
def test_unusable_upstream_documents_are_answered_502(status, body, ctype, problem):
    snap = snapshot({})
    ctx, flow = gateway_flow(snap, "/.well-known/oauth-protected-resource/github-mcp")
    prm.serve_metadata(ctx, flow)
    upstream_answers(flow, status, body, {"content-type": ctype})
    response = run_response(ctx, flow)
    assert response.status_code == 502 and response.headers["content-type"] == "application/json"
    assert problem in json.loads(response.content)["message"]


# -- challenge -----------------------------------------------------------------------------------

# Not a wrong key's bare "Unauthorized": what is missing, and why.
KEY_AND_TOKEN = ("Missing Authorization header: this route needs your own OAuth access token for the upstream MCP "
                 "server, which the gateway passes through to it, sent as 'Authorization: Bearer <token>'. "
                 "WWW-Authenticate names the protected resource metadata, which says where to get one. "
                 "An API key alone is not enough on this route.")


async def test_challenge_without_authorization_comes_before_key_auth():
    snap = snapshot({"challenge": True}, key_auth={})
    for headers in ([], [("apikey", "dev-api-key")], [("authorization", " ")]):
        ctx, flow = gateway_flow(snap, "/github-mcp", headers, method="POST", scheme="https", host="gw.example")
        response = await pipeline.run(pipeline.header_phases(ctx) + pipeline.request_phases(ctx), ctx, flow)
        assert response.status_code == 401 and json.loads(response.content) == {"message": KEY_AND_TOKEN}
        assert response.headers["WWW-Authenticate"] == (
            'Bearer resource_metadata="https://gw.example/.well-known/oauth-protected-resource/github-mcp"')
        # RFC 6750 section 3.1: no credential was sent, so no error code
    # With a bearer the next identity check decides: key-auth, here.
    ctx, flow = gateway_flow(snap, "/github-mcp", [("authorization", "Bearer a-client-token")], method="POST")
    response = await pipeline.run(pipeline.header_phases(ctx) + pipeline.request_phases(ctx), ctx, flow)
    assert response.status_code == 401 and json.loads(response.content) == {"message": "No API key found in request"}


def test_challenge_is_opt_in():
    for settings in ({}, None):
        ctx, flow = gateway_flow(snapshot(settings), "/github-mcp", method="POST")
        assert prm.challenge(ctx, flow) is None


def test_intercept_mode_challenge_names_the_upstream_prm():
    snap = snapshot({"challenge": True})
    ctx, flow = intercept_flow(snap, "https://api.githubcopilot.com/mcp")
    response = prm.challenge(ctx, flow)
    assert response.headers["WWW-Authenticate"].startswith(f'Bearer resource_metadata="{UPSTREAM_PRM}"')


def test_intercept_mode_metadata_requests_are_public():
    # A service at the root of its host governs the host's whole path space, PRM included.
    policy = Policy.model_validate({"services": {"root": {"url": "http://127.0.0.1:8931"}},
                                    "routes": {"root": {"service": "root", "paths": ["/r"], "prm": {"challenge": True},
                                                        "key_auth": {}}}})
    snap = Snapshot(policy, RouteTable(policy), "test", next(_versions), "test", ())
    well_known = "http://127.0.0.1:8931/.well-known/oauth-protected-resource"
    ctx, flow = intercept_flow(snap, well_known, method="GET", body=b"")
    assert ctx.match is not None and prm.challenge(ctx, flow) is None
    preflight = [("Origin", "https://app.example"), ("Access-Control-Request-Method", "GET")]
    ctx, flow = intercept_flow(snap, well_known, preflight, method="OPTIONS", body=b"")
    assert prm.challenge(ctx, flow) is None
    ctx, flow = intercept_flow(snap, "http://127.0.0.1:8931/mcp")
    assert prm.challenge(ctx, flow).status_code == 401


@pytest.mark.parametrize("url, method, body", [
    ("http://127.0.0.1:8931/.well-known/oauth-protected-resource", "POST", b"{}"),  # only reads are public
    ("http://127.0.0.1:8931/.well-known/oauth-protected-resource", "GET", b"{}"),  # a read has no body
    ("http://127.0.0.1:8931/.well-known/oauth-protected-resource", "OPTIONS", b""),  # not a preflight
    ("http://127.0.0.1:8931/.well-known/oauth-protected-resource/x", "GET", b""),  # not the route's exact path
    ("http://127.0.0.1:8931/.well-known/oauth-protected-resource/x", "POST", b"{}"),
])
def test_intercept_mode_only_reads_of_the_exact_prm_path_skip_identity(url, method, body):
    policy = Policy.model_validate({"services": {"root": {"url": "http://127.0.0.1:8931"}},
                                    "routes": {"root": {"service": "root", "paths": ["/r"], "prm": {"challenge": True},
                                                        "key_auth": {}}}})
    snap = Snapshot(policy, RouteTable(policy), "test", next(_versions), "test", ())
    ctx, flow = intercept_flow(snap, url, method=method, body=body)
    assert not prm.is_metadata_request(ctx, flow.request)
    assert prm.challenge(ctx, flow).status_code == 401


# -- upstream challenges ---------------------------------------------------------------------------


async def forwarded(snap: Snapshot, headers=(("authorization", "Bearer expired"),)) -> tuple[FlowContext, http.HTTPFlow]:
    ctx, flow = gateway_flow(snap, "/github-mcp", list(headers), method="POST", host="localhost:8443",
                             scheme="https")
    flow.request.headers["content-type"] = "application/json"
    flow.request.content = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    assert await pipeline.run(pipeline.header_phases(ctx) + pipeline.request_phases(ctx), ctx, flow) is None
    return ctx, flow


async def test_upstream_challenge_points_at_the_gateway_prm():
    ctx, flow = await forwarded(snapshot({}))
    upstream_answers(flow, 401, b'{"error":"invalid_token"}', {"content-type": "application/json"})
    flow.response.headers.set_all("WWW-Authenticate", [
        f'Bearer error="invalid_token", resource_metadata="{UPSTREAM_PRM}", scope="repo"',
        'Basic realm="x"'])
    response = run_response(ctx, flow)
    assert response.status_code == 401
    assert response.headers.get_all("WWW-Authenticate") == [
        'Bearer error="invalid_token", '
        'resource_metadata="https://localhost:8443/.well-known/oauth-protected-resource/github-mcp", scope="repo"',
        'Basic realm="x"']


async def test_upstream_challenge_left_alone_without_discovery_settings_or_in_intercept_mode():
    ctx, flow = await forwarded(snapshot(None))
    upstream_answers(flow, 401, b"", {"WWW-Authenticate": f'Bearer resource_metadata={UPSTREAM_PRM}'})
    assert run_response(ctx, flow).headers["WWW-Authenticate"] == f"Bearer resource_metadata={UPSTREAM_PRM}"
    ctx, flow = intercept_flow(snapshot({}), "https://api.githubcopilot.com/mcp")
    upstream_answers(flow, 401, b"", {"WWW-Authenticate": f'Bearer resource_metadata="{UPSTREAM_PRM}"'})
    assert run_response(ctx, flow).headers["WWW-Authenticate"] == f'Bearer resource_metadata="{UPSTREAM_PRM}"'


async def test_unquoted_upstream_parameter_and_an_odd_host_are_quoted_safely():
    snap = snapshot({})
    ctx, flow = gateway_flow(snap, "/github-mcp", [("authorization", "Bearer a-client-token")], method="POST")
    ctx.client_host, ctx.upstream_set = 'localhost:8443"x', True
    upstream_answers(flow, 401, b"", {"WWW-Authenticate": f"Bearer resource_metadata={UPSTREAM_PRM}, error=invalid_token"})
    prm.rewrite_upstream_challenge(ctx, flow)
    assert flow.response.headers["WWW-Authenticate"] == (
        'Bearer resource_metadata="http://localhost:8443\\"x/.well-known/oauth-protected-resource/github-mcp", '
        "error=invalid_token")
