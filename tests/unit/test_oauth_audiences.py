"""openid-connect's audience_required (more than one, Kong's AND/OR entries) and audience_claim (a
claim path): the check, the settings, the decK translation, and introspected tokens through the
addon's hooks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mcpgw.identity.oauth_settings import OAuthConfig
from mcpgw.identity.scopes import required_sets
from mcpgw.identity.tokens import TokenRejected, check_audience_required
from mcpgw.policy.models import Policy
from tests.unit.test_deck import deck, only_problem, route
from tests.unit.test_oauth_groups import RESOURCE, auth, call, policy  # noqa: F401 (auth: a fixture)

AUD = ["aud"]
NESTED = ["resource_access", "audiences"]
BASE = {"authorization_servers": ["https://idp.example.com"], "jwks_endpoint": "https://idp.example.com/jwks"}


def check(claims: dict, required: list[str], path: list[str] = AUD) -> str | None:
    try:
        check_audience_required(claims, required_sets(required), path)
    except TokenRejected as e:
        return str(e)
    return None


@pytest.mark.parametrize("claims, required", [
    ({"aud": "mcp-a"}, ["mcp-a", "mcp-b"]),                 # any one entry
    ({"aud": ["other", "mcp-b"]}, ["mcp-a", "mcp-b"]),
    ({"aud": ["mcp-a", "mcp-b"]}, ["mcp-a mcp-b"]),         # all of one entry
    ({"aud": "mcp-a mcp-b"}, ["mcp-a mcp-b", "admin"]),      # a string claim is read space-separated, as Kong reads claims
    ({"aud": "x", "resource_access": {"audiences": ["mcp-b"]}}, ["mcp-b"]),
])
def test_accepted(claims, required):
    path = NESTED if "resource_access" in claims else AUD
    assert check(claims, required, path) is None


ANOTHER = "The access token was issued for another audience"


@pytest.mark.parametrize("claims, required, path, message", [
    ({"aud": "mcp-c"}, ["mcp-a", "mcp-b"], AUD, ANOTHER),
    ({"aud": ["mcp-a"]}, ["mcp-a mcp-b"], AUD, ANOTHER),                      # half an entry
    ({"aud": "mcp-a/"}, ["mcp-a"], AUD, ANOTHER),                             # compared exactly
    ({"aud": "MCP-A"}, ["mcp-a"], AUD, ANOTHER),
    # attacker: the audience in another claim than the one configured
    ({"aud": "mcp-a"}, ["mcp-a"], NESTED, "The access token has no audience (resource_access.audiences)"),
    ({"resource_access": {"audiences": ["mcp-a"]}}, ["mcp-a"], AUD, "The access token has no audience (aud)"),
    ({"resource_access.audiences": ["mcp-a"]}, ["mcp-a"], NESTED, "The access token has no audience"),  # a dotted name is no path
    # attacker: what cannot be compared makes the token malformed, never quietly dropped
    ({"aud": ["mcp-a", 7]}, ["mcp-a"], AUD, "The access token's audience (aud) is malformed"),
    ({"aud": ["mcp-a", {"aud": "mcp-a"}]}, ["mcp-a"], AUD, "is malformed"),
    ({"aud": [["mcp-a"]]}, ["mcp-a"], AUD, "is malformed"),
    ({"aud": {"mcp-a": True}}, ["mcp-a"], AUD, "is malformed"),
    ({"aud": 1}, ["mcp-a"], AUD, "is malformed"),
    ({"aud": True}, ["mcp-a"], AUD, "is malformed"),
    ({"aud": []}, ["mcp-a"], AUD, "The access token has no audience (aud)"),  # empty array
    ({"aud": ""}, ["mcp-a"], AUD, "has no audience"),
    ({"aud": "   "}, ["mcp-a"], AUD, "has no audience"),
    ({}, ["mcp-a"], AUD, "has no audience"),
])
def test_refused(claims, required, path, message):
    found = check(claims, required, path)
    assert found is not None and message in found, found


def test_settings():
    config = OAuthConfig.model_validate({**BASE, "audience_required": ["a", "b c"], "audience_claim": NESTED})
    assert (config.audience_required, config.audience_claim) == (["a", "b c"], NESTED)
    assert OAuthConfig.model_validate(BASE).audience_claim == ["aud"]  # Kong's default
    for bad, message in (({"audience_required": ["a", " "]}, "would require nothing"),
                         ({"audience_required": ["a"], "insecure_relaxed_audience_validation": True}, "set one"),
                         ({"audience_claim": ["azp"]}, "without audience_required"),
                         ({"audience_required": ["a"], "audience_claim": ["x", ""]}, "claim path")):
        with pytest.raises(ValidationError, match=message):
            OAuthConfig.model_validate({**BASE, **bad})


def oidc(**config) -> dict:
    return {"name": "openid-connect", "config": {"issuer": "https://idp", "auth_methods": ["bearer"], **config}}


def test_deck_audiences():
    several = route(deck(oidc(audience_required=["https://gw.example.com/mcp", "mcp-gateway"],
                              audience_claim=["resource_access", "audiences"])))["oauth"]
    assert several["audience_required"] == ["https://gw.example.com/mcp", "mcp-gateway"]
    assert several["audience_claim"] == ["resource_access", "audiences"]
    assert "resource" not in several and "insecure_relaxed_audience_validation" not in several
    Policy.model_validate({**translate_doc(several)})  # and it loads
    keycloak = route(deck(oidc(audience_required=["account"], audience_claim=["aud"])))["oauth"]
    assert keycloak["audience_required"] == ["account"] and "resource" not in keycloak and "audience_claim" not in keycloak
    url = route(deck(oidc(audience_required=["https://gw.example.com/mcp"])))["oauth"]
    assert url["resource"] == "https://gw.example.com/mcp"  # one URL: also the resource the PRM names
    # no audience_required: no audience check, as openid-connect; audience_claim alone changes nothing
    unchecked = route(deck(oidc(audience_claim=["azp"])))["oauth"]
    assert unchecked["insecure_relaxed_audience_validation"] is True and "audience_claim" not in unchecked
    assert "expected a list of audiences" in only_problem(deck(oidc(audience_required="https://gw.example.com/mcp")))


def translate_doc(oauth: dict) -> dict:
    return {"services": {"s": {"url": "http://127.0.0.1:1"}}, "routes": {"r": {"service": "s", "paths": ["/mcp"],
                                                                               "oauth": oauth}}}


async def test_introspected_tokens_meet_audience_required(gateway_with, auth):
    """Introspection's answer is the token's claims: its audiences are judged the same way."""
    client_id, secret = auth.introspection_client
    doc = policy(auth, None)
    oauth = doc["routes"]["github-mcp"]["oauth"]
    del oauth["jwks_endpoint"], oauth["resource"]
    oauth |= {"introspection_endpoint": auth.introspection_url, "client_id": client_id, "client_secret": secret,
              "audience_required": ["mcp-a", "mcp-b mcp-c"], "audience_claim": NESTED}
    addon = gateway_with(doc)

    def opaque(audiences, **extra) -> str:
        return auth.mint_opaque("svc", aud=RESOURCE, **extra) if audiences is None else \
            auth.mint_opaque("svc", aud=RESOURCE, extra={"resource_access": {"audiences": audiences}})

    for audiences in (["mcp-a"], ["mcp-c", "mcp-b"]):
        assert (await call(addon, opaque(audiences))).response is None
    for audiences in (None, ["mcp-b"], ["mcp-a", 1], []):  # aud names the route, but not where asked
        refused = await call(addon, opaque(audiences))
        assert refused.response.status_code == 401, audiences
        assert 'error="invalid_token"' in refused.response.headers["WWW-Authenticate"]
