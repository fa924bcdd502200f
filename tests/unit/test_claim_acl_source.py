"""An ACL on a token claim (acl_attribute_type: oauth_access_token) on a route that validates no
token is refused at load, natively and in decK files such as Kong doc case 22 (decK's own
ai2kong output, whose claim-ACL route has no OAuth plugin); with an ai-mcp-oauth2 plugin the same
route loads and `mcp-gateway check` names the claim as its subjects."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from mcpgw.policy.loader import PolicyError, load_policy_file
from mcpgw.policy.models import Policy
from mcpgw.report import policy_summary

CASE_22 = Path(__file__).resolve().parents[3] / "shared" / "kong-docs" / "cases" / "22-deck-fixture-ai2kong-mcp-output.yaml"
needs_case = pytest.mark.skipif(not CASE_22.is_file(), reason="the Kong docs corpus is not beside this checkout")
CLAIM_ACL = {"acl_attribute_type": "oauth_access_token", "access_token_claim_field": ".user.email",
             "default_acl": [{"scope": "tools", "allow": ["gold"]}]}
OAUTH = {"authorization_servers": ["https://idp.example.com"], "jwks_endpoint": "https://idp.example.com/jwks"}
OAUTH2_PLUGIN = {"name": "ai-mcp-oauth2", "config": {
    "resource": "https://mcp.example.com/mcp/secure-flights", "authorization_servers": ["https://idp.example.com"],
    "jwks_endpoint": "https://idp.example.com/jwks"}}


def native(route: dict) -> dict:
    return {"services": {"s": {"url": "http://127.0.0.1:1"}},
            "routes": {"r": {"service": "s", "paths": ["/mcp"], "acl": CLAIM_ACL, **route}}}


def test_a_claim_acl_without_oauth_is_refused_natively():
    with pytest.raises(ValueError, match="route 'r': acl_attribute_type oauth_access_token matches the claim "
                                         ".user.email of the token the route's oauth validates, and this route "
                                         "validates no token"):
        Policy.model_validate(native({}))
    # key-auth identifies a consumer, but validates no token: still refused
    with pytest.raises(ValueError, match="validates no token"):
        Policy.model_validate({**native({"key_auth": {}}), "consumers": {"a": {"keys": ["k" * 32]}}})
    assert Policy.model_validate(native({"oauth": OAUTH})).routes["r"].acl.access_token_claim_field == ".user.email"


def case_22(services: slice, plugin: dict | None = None) -> dict:
    doc = yaml.safe_load(CASE_22.read_text())
    doc["services"] = doc["services"][services]
    if plugin is not None:
        doc["services"][0]["routes"][0]["plugins"].append(copy.deepcopy(plugin))
    return doc


def load(tmp_path: Path, doc: dict):
    path = tmp_path / "kong.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_policy_file(path)[0]


@needs_case
def test_case_22_as_written_is_refused_for_its_federation_route(tmp_path):
    with pytest.raises(PolicyError) as refused:
        load(tmp_path, case_22(slice(None)))
    assert "mode 'upstream-server' is not supported" in str(refused.value) and "federation" in str(refused.value)


@needs_case
def test_case_22_two_routes_on_one_path_are_refused(tmp_path):
    both = case_22(slice(0, 2), OAUTH2_PLUGIN)
    with pytest.raises(PolicyError, match="path '/mcp/secure-flights' is claimed by both route"):
        load(tmp_path, both)


@needs_case
def test_case_22_claim_acl_route_without_an_oauth_plugin_is_refused(tmp_path):
    with pytest.raises(PolicyError, match="'secure-flights-mcp-oauth-route': acl_attribute_type oauth_access_token "
                                          "matches the claim .user.email .* validates no token"):
        load(tmp_path, case_22(slice(0, 1)))


@needs_case
def test_case_22_claim_acl_route_with_ai_mcp_oauth2_loads(tmp_path):
    policy = load(tmp_path, case_22(slice(0, 1), OAUTH2_PLUGIN))
    route = policy.routes["secure-flights-mcp-oauth-route"]
    assert route.oauth is not None and route.acl.access_token_claim_field == ".user.email"
    assert [t.acl.model_dump(exclude_none=True) for t in route.acl.tools] == [{"allow": ["gold", "premium"],
                                                                               "deny": ["platinum"]}]
    text = policy_summary(policy, source="kong.yaml", digest="d")
    assert "acl: subjects are the values of claim .user.email of the route's validated OAuth token" in text
    assert "subjects are username" not in text
    # the other conversion-listener route of the case, alone, loads as before (consumer subjects)
    assert load(tmp_path, case_22(slice(1, 2))).routes["secure-flights-mcp-consumer-route"].acl.include_consumer_groups
