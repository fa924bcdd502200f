"""key-auth (identity/keyauth.py) and the identity headers sent upstream (identity/upstream_headers.py),
on mitmproxy test flows run through the real request pipeline."""

from __future__ import annotations

import hashlib
import itertools
import json

import pytest
from mitmproxy import http
from mitmproxy.test import tflow

from mcpgw import pipeline
from mcpgw.context import FlowContext
from mcpgw.identity.consumers import Identity
from mcpgw.identity.keyauth import authenticate
from mcpgw.identity.upstream_headers import add_identity_headers, strip_client_identity_headers
from mcpgw.policy.models import Policy
from mcpgw.policy.store import Snapshot
from mcpgw.routing import RouteTable

GATEWAY = "http://localhost:8443"
_versions = itertools.count(1)


def snapshot(key_auth: dict | None = None, **route) -> Snapshot:
    policy = Policy.model_validate({
        "consumer_groups": ["admin", "developer", "guests"],
        "consumers": {
            "admin-user": {"keys": ["admin-api-key"], "groups": ["admin"], "id": "c-admin", "custom_id": "okta|1"},
            "dev-user": {"keys": ["sha256:" + hashlib.sha256(b"dev-api-key").hexdigest()], "groups": ["developer"]},
            "guest": {"id": "c-guest", "groups": ["guests"]},
        },
        "services": {"gh": {"url": "http://127.0.0.1:8931/mcp"}, "root": {"url": "http://127.0.0.1:8931"}},
        "routes": {"gh": {"service": "gh", "paths": ["/github-mcp"], "key_auth": key_auth, **route}},
    })
    return Snapshot(policy, RouteTable(policy), "test", next(_versions), "test", ())


def request(path: str = "/github-mcp", headers: list[tuple[str, str]] = (), method: str = "POST") -> http.HTTPFlow:
    fields = [(k.encode(), v.encode()) for k, v in [("host", "localhost:8443"), ("content-type", "application/json"),
                                                     ("accept", "application/json, text/event-stream"), *headers]]
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode() if method == "POST" else b""
    return tflow.tflow(req=http.Request.make(method, GATEWAY + path, body, http.Headers(fields)))


def context(snap: Snapshot, flow: http.HTTPFlow) -> FlowContext:
    match = snap.routes.match_gateway(flow.request.path)
    return FlowContext(snap, "gateway", match, frozenset({"localhost"}), "localhost:8443", "http")


def auth(key_auth: dict | None, *headers: tuple[str, str], path: str = "/github-mcp", method: str = "POST", **route):
    snap = snapshot(key_auth, **route)
    flow = request(path, list(headers), method)
    ctx = context(snap, flow)
    return ctx, flow, authenticate(ctx, flow)


def refusal(response: http.Response | None) -> tuple[int, dict, str]:
    assert response is not None
    return response.status_code, json.loads(response.content), response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("headers, path, message", [
    ([], "/github-mcp", "No API key found in request"),
    ([("apikey", "")], "/github-mcp", "No API key found in request"),
    ([("apikey", "wrong-key")], "/github-mcp", "Unauthorized"),
    ([], "/github-mcp?apikey=wrong-key", "Unauthorized"),
    ([("apikey", "dev-api-key"), ("ApiKey", "dev-api-key")], "/github-mcp", "Duplicate API key found"),
    ([("apikey", "dev-api-key")], "/github-mcp?apikey=dev-api-key", "Duplicate API key found"),
    ([], "/github-mcp?apikey=dev-api-key&apikey=admin-api-key", "Duplicate API key found"),
    ([], "/github-mcp?api%6Bey=dev-api-key&apikey=x", "Duplicate API key found"),
])
def test_kong_refusals(headers, path, message):
    ctx, flow, response = auth({}, *headers, path=path)
    assert refusal(response) == (401, {"message": message}, "Key")
    assert response.content == json.dumps({"message": message}, separators=(",", ":")).encode()
    assert ctx.identity is None and ctx.consumed_credentials == []


def test_realm_in_the_challenge():
    _, _, response = auth({"realm": "github-mcp"})
    assert refusal(response)[2] == 'Key realm="github-mcp"'


def test_key_in_header_identifies_the_consumer_and_groups():
    ctx, flow, response = auth({}, ("APIKEY", "dev-api-key"), ("authorization", "Bearer gho_user_token"))
    assert response is None
    assert ctx.identity == Identity("dev-user", groups=("developer",), method="key-auth")
    assert ctx.consumed_credentials == [("header", "apikey")]
    # Without hide_credentials the key goes upstream, like Kong; the user's bearer always does.
    assert flow.request.headers["apikey"] == "dev-api-key"
    assert flow.request.headers["authorization"] == "Bearer gho_user_token"


def test_key_in_query_string():
    ctx, flow, response = auth({}, path="/github-mcp?x=1&apikey=admin-api-key")
    assert response is None and ctx.identity.username == "admin-user"
    assert ctx.identity.id == "c-admin" and ctx.identity.custom_id == "okta|1"
    assert ctx.consumed_credentials == [("query", "apikey")]


def test_where_to_look_is_configurable():
    _, _, response = auth({"key_in_query": False}, path="/github-mcp?apikey=dev-api-key")
    assert refusal(response)[1] == {"message": "No API key found in request"}
    _, _, response = auth({"key_in_header": False}, ("apikey", "dev-api-key"))
    assert refusal(response)[1] == {"message": "No API key found in request"}
    # Only the first key name present counts, as in Kong.
    ctx, _, response = auth({"key_names": ["x-api-key", "apikey"]}, ("apikey", "wrong"), ("x-api-key", "dev-api-key"))
    assert response is None and ctx.identity.username == "dev-user"
    assert ctx.consumed_credentials == [("header", "x-api-key")]


def test_hide_credentials_removes_the_key_from_headers_and_query():
    ctx, flow, response = auth({"hide_credentials": True}, ("apikey", "dev-api-key"), ("authorization", "Bearer t"))
    assert response is None and "apikey" not in flow.request.headers
    assert flow.request.headers["authorization"] == "Bearer t"
    ctx, flow, response = auth({"hide_credentials": True}, path="/github-mcp?a=%2F+x&apikey=dev-api-key&b")
    assert response is None and flow.request.path == "/github-mcp?a=%2F+x&b"  # the rest byte for byte
    _, flow, _ = auth({"hide_credentials": True}, path="/github-mcp?apikey=dev-api-key")
    assert flow.request.path == "/github-mcp"


def test_hide_credentials_removes_even_a_refused_key():
    _, flow, response = auth({"hide_credentials": True, "anonymous": "guest"}, ("apikey", "wrong"),
                             path="/github-mcp?apikey=again")
    assert response is None and "apikey" not in flow.request.headers and flow.request.path == "/github-mcp"


@pytest.mark.parametrize("headers", [[], [("apikey", "wrong")], [("apikey", "a"), ("apikey", "b")]])
def test_anonymous_consumer_on_any_failure(headers):
    ctx, _, response = auth({"anonymous": "guest"}, *headers)
    assert response is None
    assert ctx.identity == Identity("guest", "c-guest", None, ("guests",), "anonymous")
    assert ctx.consumed_credentials == []


def test_anonymous_by_id_and_valid_keys_still_win():
    ctx, _, _ = auth({"anonymous": "c-guest"})
    assert ctx.identity.username == "guest"
    ctx, _, _ = auth({"anonymous": "guest"}, ("apikey", "dev-api-key"))
    assert ctx.identity.method == "key-auth" and ctx.identity.username == "dev-user"


def test_with_anonymous_another_method_already_succeeded():
    snap = snapshot({"anonymous": "guest"})
    flow = request(headers=[("apikey", "wrong")])
    ctx = context(snap, flow)
    ctx.identity = Identity("alice", method="oauth")
    assert authenticate(ctx, flow) is None and ctx.identity.username == "alice"


def test_anonymous_must_exist_when_the_policy_loads():
    with pytest.raises(ValueError, match="key_auth.anonymous names consumer 'nobody', which is not defined"):
        snapshot({"anonymous": "nobody"})


@pytest.mark.parametrize("config, expected", [
    ({"key_names": []}, "at least 1 item"),
    ({"key_names": ["api key"]}, "not a valid header name"),
    ({"key_in_body": True}, "key_in_body is not supported"),
    ({"key_in_header": False, "key_in_query": False}, "could never be found"),
    ({"realm": 'a"b'}, "no quotes"),
    ({"keys": ["x"]}, "Extra inputs"),
])
def test_invalid_settings(config, expected):
    with pytest.raises(ValueError, match=expected):
        snapshot(config)


def test_preflight_and_metadata_requests():
    _, _, response = auth({"run_on_preflight": False}, method="OPTIONS")
    assert response is None
    _, _, response = auth({}, method="OPTIONS")
    assert response is not None and response.status_code == 401
    # Intercept mode, a service at the root of its host: the upstream's PRM is public.
    snap = snapshot({}, service="root")
    flow = tflow.tflow(req=http.Request.make("GET", "http://127.0.0.1:8931/.well-known/oauth-protected-resource"))
    req = flow.request
    ctx = FlowContext(snap, "intercept", snap.routes.match_intercept(req.scheme, req.host, req.port, req.path))
    assert ctx.match is not None and authenticate(ctx, flow) is None
    # Not in gateway mode, where the gateway serves the route's PRM itself.
    _, _, response = auth({}, path="/github-mcp/.well-known/oauth-protected-resource", method="GET")
    assert response is not None and response.status_code == 401


def test_routes_without_key_auth_are_left_alone():
    ctx, flow, response = auth(None, ("apikey", "dev-api-key"))
    assert response is None and ctx.identity is None and flow.request.headers["apikey"] == "dev-api-key"


# -- identity headers ---------------------------------------------------------------------------


FORGED = [("X-Consumer-Username", "admin-user"), ("x-consumer-groups", "admin"), ("X-Consumer-ID", "c-admin"),
          ("X-Credential-Identifier", "x"), ("X-Anonymous-Consumer", "false"), ("X-Anonymous-Groups", "admin")]


def test_client_identity_headers_are_always_removed():
    snap = snapshot(None)
    flow = request(headers=[*FORGED, ("x-consumerish", "kept")])
    ctx = context(snap, flow)
    strip_client_identity_headers(ctx, flow)
    add_identity_headers(ctx, flow)
    assert [k for k in flow.request.headers if k.lower().startswith(("x-consumer-", "x-credential", "x-anonymous"))] == []
    assert flow.request.headers["x-consumerish"] == "kept"


async def test_pipeline_forwards_the_resolved_identity_only():
    snap = snapshot({"hide_credentials": True}, upstream_identity_headers=True)
    flow = request(headers=[*FORGED, ("apikey", "dev-api-key")])
    ctx = context(snap, flow)
    assert await pipeline.run(pipeline.header_phases(ctx) + pipeline.request_phases(ctx), ctx, flow) is None
    headers = flow.request.headers
    assert headers["X-Consumer-Username"] == "dev-user" and headers["X-Consumer-Groups"] == "developer"
    assert "X-Consumer-ID" not in headers and "X-Credential-Identifier" not in headers
    assert "X-Anonymous-Consumer" not in headers and "X-Anonymous-Groups" not in headers and "apikey" not in headers
    assert flow.request.host == "127.0.0.1" and flow.request.path == "/mcp"


async def test_pipeline_identity_headers_for_all_fields_and_anonymous():
    snap = snapshot({"anonymous": "guest"}, upstream_identity_headers=True)
    flow = request(headers=[("apikey", "admin-api-key")])
    ctx = context(snap, flow)
    await pipeline.run(pipeline.header_phases(ctx) + pipeline.request_phases(ctx), ctx, flow)
    assert [flow.request.headers.get(h) for h in ("X-Consumer-Username", "X-Consumer-ID", "X-Consumer-Custom-ID",
                                                  "X-Consumer-Groups", "X-Anonymous-Consumer")] == \
        ["admin-user", "c-admin", "okta|1", "admin", None]
    flow = request()
    ctx = context(snap, flow)
    await pipeline.run(pipeline.header_phases(ctx) + pipeline.request_phases(ctx), ctx, flow)
    assert flow.request.headers["X-Consumer-Username"] == "guest"
    assert flow.request.headers["X-Anonymous-Consumer"] == "true"


def test_an_identity_unfit_for_a_header_is_refused():
    snap = snapshot(None, upstream_identity_headers=True)
    flow = request()
    ctx = context(snap, flow)
    ctx.identity = Identity("evil\r\nX-Consumer-Groups: admin", method="oauth")
    response = add_identity_headers(ctx, flow)
    assert response is not None and response.status_code == 500
    assert "X-Consumer-Username" not in flow.request.headers
