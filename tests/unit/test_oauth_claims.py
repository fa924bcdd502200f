"""Claim headers (identity/claim_headers.py) and claim subjects of ACLs (governance/engine.py):
settings validation, value forms, and the phases on mitmproxy test flows."""

from __future__ import annotations

import pytest
from mitmproxy.test import tflow
from pydantic import ValidationError

from mcpgw.context import FlowContext
from mcpgw.governance.acl import AclSettings, compile_acl
from mcpgw.governance.engine import audience, claim_subjects, subjects_of, view
from mcpgw.identity.claim_headers import add_claim_headers, header_value
from mcpgw.identity.consumers import Identity
from mcpgw.identity.oauth import OAuthConfig
from mcpgw.policy.models import Policy
from mcpgw.policy.store import Snapshot
from mcpgw.routing import RouteTable

BASE = {"authorization_servers": ["https://idp.example.com"], "jwks_endpoint": "https://idp.example.com/jwks"}


@pytest.mark.parametrize("value, expected", [
    ("alice", "alice"), (42, "42"), (True, "true"), (1.5, "1.5"), (["a", "b"], "a, b"), ([1, "x"], "1, x"),
    ({"id": 1}, '{"id":1}'), ([{"id": 1}], '[{"id":1}]'), (None, None), ("é", "é"),
])
def test_header_values(value, expected):
    assert header_value(value) == expected


@pytest.mark.parametrize("config, message", [
    ({"claim_to_header": [{"claim": "sub", "header": "X-User"}],
      "upstream_headers": [{"header": "X-Org", "path": ["org"]}]}, "mutually exclusive"),
    ({"claim_to_header": [{"claim": "sub", "header": "Authorization"}]}, "set by HTTP or by the gateway"),
    ({"claim_to_header": [{"claim": "sub", "header": "X_Consumer_Username"}]}, "set by HTTP or by the gateway"),
    ({"claim_to_header": [{"claim": "sub", "header": "X User"}]}, "is not a header name"),
    ({"upstream_headers": [{"header": "X-A", "path": ["a"]}, {"header": "x_a", "path": ["b"]}]}, "one claim only"),
    ({"upstream_headers": [{"header": "X-A", "path": ["a", ""]}]}, "non-empty"),
])
def test_claim_header_settings_are_checked(config, message):
    with pytest.raises(ValidationError, match=message):
        OAuthConfig(**BASE, **config)


def snapshot(oauth: dict) -> Snapshot:
    policy = Policy.model_validate({"services": {"s": {"url": "http://upstream.test/mcp"}},
                                    "routes": {"r": {"service": "s", "paths": ["/mcp"], "oauth": {**BASE, **oauth}}}})
    return Snapshot(policy, RouteTable(policy), "test", 1, "test", ())


def flow_ctx(snap: Snapshot, headers: list[tuple[bytes, bytes]], claims: dict | None):
    flow = tflow.tflow()
    flow.request.path = "/mcp"
    flow.request.headers.fields = tuple(headers)
    ctx = FlowContext(snap, "gateway", snap.routes.match_gateway("/mcp"), frozenset(), "gw.test", "http")
    ctx.token_claims = claims
    return ctx, flow


def test_phase_strips_lookalikes_and_sets_claims():
    snap = snapshot({"upstream_headers": [{"header": "X-Org-Id", "path": ["org", "id"]}]})
    ctx, flow = flow_ctx(snap, [(b"x_org_id", b"forged"), (b"X-ORG-ID", b"forged"), (b"Accept", b"*/*")],
                         {"org": {"id": 7}})
    assert add_claim_headers(ctx, flow) is None
    assert flow.request.headers.fields == ((b"Accept", b"*/*"), (b"X-Org-Id", b"7"))
    ctx, flow = flow_ctx(snap, [(b"x-org-id", b"forged")], {})
    assert add_claim_headers(ctx, flow) is None and flow.request.headers.fields == ()
    ctx, flow = flow_ctx(snap, [], {"org": {"id": "a\nb"}})
    assert add_claim_headers(ctx, flow).status_code == 401


def test_claim_subjects():
    assert claim_subjects({"g": "a"}, ".g") == {"a"}
    assert claim_subjects({"g": ["a", "", 3, "b"]}, "g") == {"a", "b"}
    assert claim_subjects({"u": {"e": "x@y"}}, ".u.e") == {"x@y"}
    assert claim_subjects({"u": "x"}, ".u.e") == frozenset()
    assert claim_subjects(None, ".g") == frozenset()
    assert claim_subjects({"g": {"a": 1}}, ".g") == frozenset()


def test_acl_on_a_claim_ignores_the_consumer():
    acl = compile_acl(AclSettings(acl_attribute_type="oauth_access_token", access_token_claim_field=".team",
                                  include_consumer_groups=True,
                                  default_acl=[{"scope": "tools", "allow": ["blue"]}]))
    admin = Identity("blue", groups=("blue",), method="oauth")
    assert subjects_of(admin, acl) == frozenset()  # without the token's claims: nobody
    assert not view(acl, admin).tool("t").allowed
    assert view(acl, None, {"team": "blue"}).tool("t").allowed
    assert not view(acl, admin, {"team": "red"}).tool("t").allowed
    assert audience(admin, acl) == audience(None, acl) == "the access token's .team"  # a denial names the claim
    with pytest.raises(ValidationError, match="goes with access_token_claim_field"):
        AclSettings(acl_attribute_type="oauth_access_token")
    with pytest.raises(ValidationError, match="goes with access_token_claim_field"):
        AclSettings(access_token_claim_field=".team")
