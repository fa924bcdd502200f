"""Credential mediation (credentials.py): Kong request-transformer-advanced operations, overrides,
the swap itself, and the origin the stored credential is bound to."""

from __future__ import annotations

import pytest
import yaml
from mitmproxy import http
from mitmproxy.test import tflow, tutils

from mcpgw import credentials, forwarding, redaction
from mcpgw.context import FlowContext
from mcpgw.identity.consumers import Identity
from mcpgw.policy.loader import PolicyError
from mcpgw.policy.store import PolicyStore, Snapshot

UPSTREAM = "https://mcp.konghq.example/mcp"
STORED = "stored-konnect-token-0123"
DEV = Identity("dev-user", id="dev-id", custom_id="idp|dev", groups=("developer",), method="oauth")
ADMIN = Identity("admin-user", groups=("admin", "developer"), method="key-auth")


def load(tmp_path, routes: dict, **extra) -> Snapshot:
    policy = {
        "consumer_groups": ["admin", "developer"],
        "consumers": {"dev-user": {"groups": ["developer"], "keys": ["dev-api-key-1"]}},
        "services": {"konnect": {"url": UPSTREAM}},
        "routes": routes,
        **extra,
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return PolicyStore().load(path)


def inject_route(**config) -> dict:
    return {"konnect": {"service": "konnect", "paths": ["/konnect-mcp"], "key_auth": {},
                        "credentials": {"mode": "inject", **config}}}


def request_flow(path="/konnect-mcp", *, host="localhost", port=8443, scheme="http", headers=()):
    fields = [(b"content-type", b"application/json"), *headers]
    if not any(name.lower() == b"host" for name, _ in fields):
        fields.insert(0, (b"host", f"{host}:{port}".encode()))
    req = tutils.treq(method=b"POST", scheme=scheme.encode(), host=host, port=port, path=path.encode(),
                      headers=http.Headers(fields), content=b"{}")
    return tflow.tflow(req=req)


def context(snap: Snapshot, flow, identity: Identity | None = DEV, mode="gateway") -> FlowContext:
    req = flow.request
    if mode == "gateway":
        match = snap.routes.match_gateway(req.path)
    else:
        match = snap.routes.match_intercept(req.scheme, req.host, req.port, req.path)
    ctx = FlowContext(snap, mode, match, frozenset({"localhost"}), req.host_header, req.scheme)
    ctx.identity = identity
    return ctx


def transformed(tmp_path, operations: dict, headers=(), path="/konnect-mcp"):
    snap = load(tmp_path, inject_route(**operations))
    flow = request_flow(path, headers=headers)
    assert credentials.mediate(context(snap, flow), flow) is None
    return flow.request


# -- Kong request-transformer-advanced semantics ------------------------------------------------


def test_operations_run_in_kongs_order(tmp_path):
    # Every step sees the result of the one before: remove, rename, replace, add, append.
    req = transformed(tmp_path, {
        "remove": {"headers": ["X-A"]},
        "rename": {"headers": ["X-B:X-A"]},  # X-A exists again, with X-B's value
        "replace": {"headers": ["X-A:replaced", "X-Missing:never"]},  # only names present
        "add": {"headers": ["X-A:added", "X-New:first", "X-New:second"]},  # only names absent
        "append": {"headers": ["X-New:appended", "X-Fresh:created"]},
    }, headers=((b"X-A", b"original"), (b"X-B", b"from-b")))
    assert req.headers.get_all("X-A") == ["replaced"]
    assert "X-B" not in req.headers and "X-Missing" not in req.headers
    assert req.headers.get_all("X-New") == ["first", "appended"]
    assert req.headers.get_all("X-Fresh") == ["created"]


def test_rename_moves_every_value_and_overwrites_the_target(tmp_path):
    req = transformed(tmp_path, {"rename": {"headers": ["X-Old:X-Target", "X-Absent:X-Kept"]}},
                      headers=((b"X-Old", b"1"), (b"X-Old", b"2"), (b"X-Target", b"lost"), (b"X-Kept", b"kept")))
    assert req.headers.get_all("X-Target") == ["1", "2"]
    assert "X-Old" not in req.headers
    assert req.headers.get_all("X-Kept") == ["kept"]  # a header rename only acts when the old name is present


def test_header_names_are_case_insensitive(tmp_path):
    req = transformed(tmp_path, {"replace": {"headers": ["x-tenant:t2"]}, "add": {"headers": ["X-TENANT:never"]}},
                      headers=((b"X-Tenant", b"t1"),))
    assert req.headers.get_all("x-tenant") == ["t2"]


def test_querystring_operations(tmp_path):
    req = transformed(tmp_path, {
        "remove": {"querystring": ["drop"]},
        "rename": {"querystring": ["old:new", "absent:clobbered"]},  # Kong renames unconditionally
        "replace": {"querystring": ["keep:replaced", "missing:never"]},
        "add": {"querystring": {"keep": "never", "api_version": 2}},  # a YAML number is the text it was
        "append": {"querystring": ["tag:b"]},
    }, path="/konnect-mcp/x?drop=1&old=o&clobbered=c&keep=k&tag=a")
    assert list(req.query.items(multi=True)) == [
        ("keep", "replaced"), ("tag", "a"), ("new", "o"), ("api_version", "2"), ("tag", "b")]


def test_kong_list_syntax_and_mapping_are_equivalent(tmp_path, monkeypatch):
    monkeypatch.setenv("KONNECT_MCP_TOKEN", STORED)
    kong = load(tmp_path, inject_route(add={"headers": ["Authorization:Bearer {env://KONNECT_MCP_TOKEN}",
                                                        "X-Multi::a:b"]}))
    mapping = load(tmp_path, inject_route(add={"headers": {"Authorization": "Bearer {env://KONNECT_MCP_TOKEN}",
                                                           "X-Multi": ["a:b"]}}))
    for snap in (kong, mapping):
        ops = snap.policy.routes["konnect"].credentials.add.headers
        assert [(n, v.reveal()) for n, v in ops] == [("Authorization", f"Bearer {STORED}"), ("X-Multi", "a:b")]
        # The policy never writes a resolved value back: it serializes to the reference.
        assert STORED not in repr(snap.policy) and STORED not in str(snap.policy.model_dump())


@pytest.mark.parametrize("operations, message", [
    ({"add": {"headers": ["Authorization"]}}, "has no value"),
    ({"add": {"headers": {"Host": "evil.example"}}}, "Host cannot be set"),
    ({"replace": {"headers": ["X-T:$(headers.x)"]}}, "Kong templates"),
    ({"rename": {"headers": ["X-A:x-a"]}}, "renamed to itself"),
    ({"add": {"headers": ["Bad Name:v"]}}, "not a valid header name"),
    ({"remove": {"headers": {"X-A": "v"}}}, "remove takes a list of names"),
    ({"overrides": [{"add": {"headers": ["A:b"]}}]}, "an override needs consumers or groups"),
    ({"overrides": [{"groups": ["admins"], "add": {"headers": ["A:b"]}}]}, "undeclared consumer group(s) 'admins'"),
    ({"add": {"headers": ["Authorization:Bearer {env://MCPGW_TEST_UNSET}"]}}, "cannot resolve {env://MCPGW_TEST_UNSET}"),
])
def test_invalid_operations_are_policy_errors(tmp_path, operations, message):
    with pytest.raises(PolicyError) as e:
        load(tmp_path, inject_route(**operations))
    assert message in str(e.value)


def test_errors_never_quote_a_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("MCPGW_TEST_BROKEN", "line-one-secret\nline-two")
    with pytest.raises(PolicyError) as e:
        load(tmp_path, inject_route(add={"headers": ["Authorization:Bearer {env://MCPGW_TEST_BROKEN}"]}))
    assert "control character" in str(e.value) and "line-one-secret" not in str(e.value)


def test_passthrough_takes_no_operations_and_inject_needs_an_identity(tmp_path):
    with pytest.raises(PolicyError, match="apply only with mode: inject"):
        load(tmp_path, {"r": {"service": "konnect", "paths": ["/r"], "credentials": {"add": {"headers": ["A:b"]}}}})
    with pytest.raises(PolicyError, match="add key_auth or oauth"):
        load(tmp_path, {"r": {"service": "konnect", "paths": ["/r"], "credentials": {"mode": "inject"}}})
    load(tmp_path, {"r": {"service": "konnect", "paths": ["/r"],
                          "credentials": {"mode": "inject", "allow_anonymous": True}}})


# -- the swap ------------------------------------------------------------------------------------


def test_inject_strips_every_client_credential(tmp_path, monkeypatch):
    monkeypatch.setenv("KONNECT_MCP_TOKEN", STORED)
    snap = load(tmp_path, inject_route(add={"headers": ["Authorization:Bearer {env://KONNECT_MCP_TOKEN}"]}))
    flow = request_flow("/konnect-mcp?apikey=dev-api-key-1&x-gw-key=k2&page=2", headers=(
        (b"Authorization", b"Bearer user-token"), (b"Proxy-Authorization", b"Basic cHJveHk="),
        (b"Cookie", b"session=abc"), (b"X-Gw-Key", b"k1"), (b"X-Consumer-Username", b"dev-user")))
    ctx = context(snap, flow)
    ctx.consumed_credentials += [("query", "apikey"), ("header", "x-gw-key")]
    assert credentials.mediate(ctx, flow) is None
    req = flow.request
    assert req.headers.get_all("authorization") == [f"Bearer {STORED}"]
    for gone in ("proxy-authorization", "cookie", "x-gw-key"):
        assert gone not in req.headers
    assert req.path == "/konnect-mcp?page=2"  # consumed query keys gone, the rest byte for byte
    assert req.headers["X-Consumer-Username"] == "dev-user"  # identity headers are the gateway's own


def test_inject_removes_key_auth_names_even_when_not_consumed(tmp_path):
    # key-auth with an anonymous fallback leaves an invalid key unconsumed; it still must not leak.
    snap = load(tmp_path, inject_route(allow_anonymous=True, add={"headers": ["X-Upstream-Key:svc-key-1234"]}))
    flow = request_flow("/konnect-mcp?apikey=wrong-key", headers=((b"apikey", b"wrong-key-2"),))
    assert credentials.mediate(context(snap, flow, identity=None), flow) is None
    assert "apikey" not in flow.request.headers and flow.request.path == "/konnect-mcp"
    assert flow.request.headers["X-Upstream-Key"] == "svc-key-1234"


def test_passthrough_keeps_the_clients_authorization(tmp_path):
    snap = load(tmp_path, {"gh": {"service": "konnect", "paths": ["/github-mcp"], "key_auth": {}}})
    flow = request_flow("/github-mcp", headers=((b"Authorization", b"Bearer ghu_user"), (b"apikey", b"dev-api-key-1"),
                                                (b"Proxy-Authorization", b"Basic cHJveHk=")))
    assert credentials.mediate(context(snap, flow), flow) is None
    assert flow.request.headers["Authorization"] == "Bearer ghu_user"
    assert flow.request.headers["apikey"] == "dev-api-key-1"  # hiding it is key-auth's hide_credentials
    assert "Proxy-Authorization" not in flow.request.headers  # always meant for a proxy


@pytest.mark.parametrize("identity", [None, Identity("nobody", method="anonymous")])
def test_unauthenticated_callers_never_get_the_stored_credential(tmp_path, identity):
    snap = load(tmp_path, inject_route(add={"headers": ["Authorization:Bearer stored-abcdef"]}))
    flow = request_flow(headers=((b"Authorization", b"Bearer mine"),))
    refusal = credentials.mediate(context(snap, flow, identity=identity), flow)
    assert refusal is not None and refusal.status_code == 403
    assert flow.request.headers["Authorization"] == "Bearer mine"  # nothing was injected
    assert b"stored-abcdef" not in refusal.content


def test_allow_anonymous_injects_for_anyone(tmp_path):
    snap = load(tmp_path, inject_route(allow_anonymous=True, add={"headers": ["Authorization:Bearer public-abcdef"]}))
    flow = request_flow()
    assert credentials.mediate(context(snap, flow, identity=None), flow) is None
    assert flow.request.headers["Authorization"] == "Bearer public-abcdef"


# -- overrides -----------------------------------------------------------------------------------


OVERRIDES = {
    "add": {"headers": ["Authorization:Bearer route-default", "X-Route:only-default"]},
    "overrides": [
        {"groups": ["developer"], "add": {"headers": ["Authorization:Bearer developers"]}},
        {"groups": ["admin"], "add": {"headers": ["Authorization:Bearer admins"]}},
        {"consumers": ["admin-user"], "add": {"headers": ["Authorization:Bearer admin-user-account"]}},
        {"consumers": ["idp|dev"], "add": {"headers": ["Authorization:Bearer by-custom-id"]}},
    ],
}


@pytest.mark.parametrize("identity, expected", [
    (ADMIN, "Bearer admin-user-account"),  # a consumer match beats an earlier group match
    (DEV, "Bearer by-custom-id"),  # consumers match username, id or custom_id
    (Identity("ops", groups=("admin", "developer"), method="oauth"), "Bearer developers"),  # first group in file order
    (Identity("guest", groups=("others",), method="oauth"), "Bearer route-default"),
])
def test_overrides_consumer_first_then_groups_in_file_order(tmp_path, identity, expected):
    snap = load(tmp_path, inject_route(**OVERRIDES))
    flow = request_flow()
    assert credentials.mediate(context(snap, flow, identity=identity), flow) is None
    assert flow.request.headers.get_all("Authorization") == [expected]
    # An override replaces the route's operations entirely.
    assert ("X-Route" in flow.request.headers) == (expected == "Bearer route-default")


# -- where the stored credential may go ----------------------------------------------------------


def test_client_headers_cannot_choose_the_destination(tmp_path):
    snap = load(tmp_path, inject_route(add={"headers": ["Authorization:Bearer stored-abcdef"]}))
    flow = request_flow("/konnect-mcp/tools", headers=(
        (b"X-Forwarded-Host", b"evil.example"), (b"X-Forwarded-Proto", b"http"), (b"Forwarded", b"host=evil.example"),
        (b"X-Original-URL", b"http://evil.example/"), (b"Host", b"evil.example")))
    flow.request.host = "evil.example"  # as if the client had sent an absolute-form URL
    ctx = context(snap, flow)
    for phase in (credentials.mediate, forwarding.forward, credentials.check_destination):
        assert phase(ctx, flow) is None
    req = flow.request
    assert (req.scheme, req.host, req.port, req.path) == ("https", "mcp.konghq.example", 443, "/mcp/tools")
    assert req.host_header == "mcp.konghq.example"


def test_check_destination_refuses_and_masks_a_diverted_request(tmp_path):
    snap = load(tmp_path, inject_route(add={"headers": ["Authorization:Bearer stored-abcdef"]}))
    redaction.track_policy(snap)
    flow = request_flow()
    ctx = context(snap, flow)
    credentials.mediate(ctx, flow)
    forwarding.forward(ctx, flow)
    flow.request.host = "elsewhere.example"  # something after forwarding changed the target
    refusal = credentials.check_destination(ctx, flow)
    assert refusal is not None and refusal.status_code == 500
    assert flow.request.headers["Authorization"] == f"Bearer {redaction.MASK}"


def test_intercept_mode_injects_only_for_the_routes_own_origin(tmp_path):
    snap = load(tmp_path, inject_route(add={"headers": ["Authorization:Bearer stored-abcdef"]}))
    flow = request_flow("/mcp", host="mcp.konghq.example", port=443, scheme="https")
    ctx = context(snap, flow, mode="intercept")
    assert credentials.mediate(ctx, flow) is None and credentials.check_destination(ctx, flow) is None
    assert flow.request.headers["Authorization"] == "Bearer stored-abcdef"

    # The route match already requires the service's origin; the phase checks again regardless.
    other = request_flow("/mcp", host="mcp.konghq.example", port=8443, scheme="https",
                         headers=((b"Authorization", b"Bearer mine"),))
    ctx = FlowContext(snap, "intercept", ctx.match, frozenset(), other.request.host_header, "https")
    ctx.identity = DEV
    refusal = credentials.mediate(ctx, other)
    assert refusal is not None and refusal.status_code == 403
    assert other.request.headers["Authorization"] == "Bearer mine"


def test_inline_credentials_are_masked_like_references(tmp_path):
    snap = load(tmp_path, inject_route(add={"headers": ["X-Api-Key:inline-service-key", "X-Team:platform-team"]}))
    mask = redaction.for_snapshot(snap)
    assert mask("sent inline-service-key for platform-team") == f"sent {redaction.MASK} for platform-team"
