"""Groups authenticated by the caller's validated token (openid-connect's authenticated_groups_claim)
and route access by them (the acl plugin, with Kong's always_use_authenticated_groups rule);
openid-connect's groups_required and roles_required. Through the addon's hooks, with tokens from
the test authorization server."""

from __future__ import annotations

import json

import pytest
import yaml

from mcpgw.addon import MCPGateway
from mcpgw.identity.oauth import authenticated_groups
from mcpgw.policy.loader import PolicyError, load_policy_file
from tests.support.authserver import AuthServer, running_auth_server
from tests.unit.test_addon import reverse_flow, through
from tests.unit.test_deck import deck, route as deck_route, translate

RESOURCE = "http://gw.test/github-mcp"
REALM = ["realm_access", "roles"]  # Keycloak's nested realm roles, the usual authenticated_groups_claim


@pytest.fixture(scope="module")
def auth():
    with running_auth_server() as server:
        yield server


def policy(auth: AuthServer, access: dict | None, **oauth) -> dict:
    return {
        "consumer_groups": ["developer"],
        "consumers": {"dev-user": {"groups": ["developer"], "acls": ["dev"]},
                      "ops-user": {"acls": ["ops"]}},
        "services": {"gh": {"url": "https://api.githubcopilot.com/mcp"}},
        "routes": {"github-mcp": {
            "service": "gh", "paths": ["/github-mcp"],
            "oauth": {"authorization_servers": [auth.url], "jwks_endpoint": auth.jwks_url, "resource": RESOURCE,
                      "consumer_claim": ["sub"], "consumer_by": ["username"], "consumer_optional": True, **oauth},
            **({"access": access} if access is not None else {})}},
    }


async def call(addon: MCPGateway, token: str, headers: dict[str, str] | None = None):
    f = reverse_flow()
    f.request.headers["Authorization"] = f"Bearer {token}"
    for name, value in (headers or {}).items():
        f.request.headers.add(name, value)  # as sent: spelling kept, never merged
    return await through(addon, f)


def groups_token(auth: AuthServer, sub: str, roles: list[str] | str | None, aud: str = RESOURCE) -> str:
    return auth.mint(sub, aud=aud, extra={"realm_access": {"roles": roles}} if roles is not None else {})


def test_the_claim_is_read_as_kong_reads_it():
    claims = {"realm_access": {"roles": ["ops", "ops", "", 7, "a\r\nX-Evil: 1", "dev"]}, "g": "admin dev", "n": 3}
    assert authenticated_groups(claims, REALM) == ("ops", "dev")  # deduplicated; non-names and header-splitters dropped
    assert authenticated_groups(claims, ["g"]) == ("admin dev",)  # one string is one name, never split
    assert authenticated_groups(claims, ["n"]) == authenticated_groups(claims, ["missing"]) == ()
    assert authenticated_groups(claims, None) == ()


async def test_a_token_without_a_consumer_is_admitted_by_its_groups(gateway_with, auth):
    addon = gateway_with(policy(auth, {"allow": ["ops"]}, authenticated_groups_claim=REALM))
    admitted = await call(addon, groups_token(auth, "svc-agent", ["ops", "reader"]))
    assert admitted.response is None
    assert admitted.request.headers["X-Authenticated-Groups"] == "ops, reader"  # Kong's header for them
    assert "X-Consumer-Groups" not in admitted.request.headers
    for roles in (["reader"], None, [], "opsx"):  # other groups, no claim, an empty one, a near miss
        refused = await call(addon, groups_token(auth, "svc-agent", roles))
        assert refused.response.status_code == 403
        assert json.loads(refused.response.content) == {"message": "You cannot consume this service"}


async def test_attack_forged_group_headers_grant_nothing(gateway_with, auth):
    addon = gateway_with(policy(auth, {"allow": ["ops"]}, authenticated_groups_claim=REALM))
    forged = {"X_Authenticated_Groups": "ops", "X-Consumer-Groups": "ops", "x-authenticated-groups": "ops"}
    refused = await call(addon, groups_token(auth, "svc-agent", None), forged)
    assert refused.response.status_code == 403
    admitted = await call(addon, groups_token(auth, "svc-agent", ["ops"]),
                          {"X_Authenticated_Groups": "admin", "X-Authenticated-Groups-Extra": "admin"})
    assert admitted.response is None
    sent = [(k.decode().lower(), v.decode()) for k, v in admitted.request.headers.fields if b"groups" in k.lower()]
    assert sent == [("x-authenticated-groups", "ops")]  # the client's, in any spelling, are gone


async def test_attack_a_token_of_another_audience_is_refused_before_its_groups(gateway_with, auth):
    addon = gateway_with(policy(auth, {"allow": ["ops"]}, authenticated_groups_claim=REALM))
    refused = await call(addon, groups_token(auth, "svc-agent", ["ops"], aud="http://other.test/mcp"))
    assert refused.response.status_code == 401
    assert 'error="invalid_token"' in refused.response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("always", [False, True])
async def test_a_mapped_consumer_by_always_use_authenticated_groups(gateway_with, auth, always):
    """Kong: false uses authenticated groups only without a consumer; true uses them even with one,
    falling back to the consumer's when the token has none."""
    addon = gateway_with(policy(auth, {"allow": ["ops"], "always_use_authenticated_groups": always},
                                authenticated_groups_claim=REALM))
    dev_with_ops = await call(addon, groups_token(auth, "dev-user", ["ops"]))  # dev-user's own acls: [dev]
    assert (dev_with_ops.response is None) is always
    ops_with_dev = await call(addon, groups_token(auth, "ops-user", ["dev"]))  # ops-user's own acls: [ops]
    assert (ops_with_dev.response is None) is not always  # true: the token's groups alone, never mixed
    ops_without = await call(addon, groups_token(auth, "ops-user", None))
    assert ops_without.response is None and ops_without.request.headers["X-Consumer-Groups"] == "ops"  # fallback
    if always:
        assert dev_with_ops.request.headers["X-Authenticated-Groups"] == "ops"


async def test_without_the_setting_token_groups_count_for_nothing(gateway_with, auth):
    addon = gateway_with(policy(auth, {"allow": ["ops"], "always_use_authenticated_groups": True}))
    assert (await call(addon, groups_token(auth, "dev-user", ["ops"]))).response.status_code == 403
    assert (await call(addon, groups_token(auth, "svc-agent", ["ops"]))).response.status_code == 403


def test_access_groups_from_tokens_need_not_be_declared(tmp_path, auth):
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy(auth, {"deny": ["contractors"]})))
    with pytest.raises(PolicyError, match="access names group 'contractors', which is not declared"):
        load_policy_file(path)
    path.write_text(yaml.safe_dump(policy(auth, {"deny": ["contractors"]}, authenticated_groups_claim=["groups"])))
    assert load_policy_file(path)[0].routes["github-mcp"].access.deny == ["contractors"]


@pytest.mark.parametrize("setting, claim", [("groups_required", "groups"), ("roles_required", "roles")])
async def test_groups_and_roles_required(gateway_with, auth, setting, claim):
    addon = gateway_with(policy(auth, None, **{setting: ["a b", "c"]}))
    for granted in (["a", "b"], ["c"], ["x", "c"], "b a"):  # an entry wholly granted; a string is space-separated
        assert (await call(addon, auth.mint("svc", aud=RESOURCE, extra={claim: granted}))).response is None
    for granted in (["a"], ["b", "cc"], None, "a,b"):
        extra = {claim: granted} if granted is not None else {}
        refused = (await call(addon, auth.mint("svc", aud=RESOURCE, extra=extra))).response
        assert refused.status_code == 403
        challenge = refused.headers["WWW-Authenticate"]
        assert 'error="insufficient_scope"' in challenge and "scope=" not in challenge.replace("insufficient_scope", "")
        assert json.loads(refused.content)["error"] == "insufficient_scope"
        assert claim in json.loads(refused.content)["error_description"]


async def test_groups_required_reads_its_claim_path(gateway_with, auth):
    addon = gateway_with(policy(auth, None, groups_required=["ops"], groups_claim=REALM))
    assert (await call(addon, groups_token(auth, "svc", ["ops"]))).response is None
    assert (await call(addon, auth.mint("svc", aud=RESOURCE, extra={"groups": ["ops"]}))).response.status_code == 403


def test_empty_required_entries_are_refused(auth):
    from pydantic import ValidationError

    from mcpgw.policy.models import Policy
    with pytest.raises(ValidationError, match="empty groups_required entry"):
        Policy.model_validate(policy(auth, None, groups_required=[" "]))


def test_deck_openid_connect_groups_and_acl_always_use_authenticated_groups():
    oidc = {"name": "openid-connect", "config": {
        "issuer": "https://idp/realms/r", "auth_methods": ["bearer"], "audience_required": ["https://gw/mcp"],
        "authenticated_groups_claim": REALM, "groups_required": ["staff"], "groups_claim": ["groups"],
        "roles_required": ["mcp-user"], "roles_claim": ["roles"], "consumer_claim": None}}
    acl = {"name": "acl", "config": {"allow": ["ops"], "deny": None, "always_use_authenticated_groups": True,
                                     "include_consumer_groups": False, "hide_groups_header": False}}
    native = deck_route(deck(oidc, acl))
    assert {k: native["oauth"][k] for k in ("authenticated_groups_claim", "groups_required", "groups_claim",
                                            "roles_required", "roles_claim")} == {
        "authenticated_groups_claim": REALM, "groups_required": ["staff"], "groups_claim": ["groups"],
        "roles_required": ["mcp-user"], "roles_claim": ["roles"]}
    assert native["access"]["always_use_authenticated_groups"] is True
    # "ops" is in no consumer's acls: it loads because the route's tokens authenticate groups
    assert translate(deck(oidc, acl))["routes"]["r"]["access"]["allow"] == ["ops"]


async def test_groups_from_an_introspected_token(gateway_with, auth):
    """Introspection's answer is the token's claims too: its groups claim authenticates groups."""
    client_id, secret = auth.introspection_client
    doc = policy(auth, {"allow": ["ops"]}, authenticated_groups_claim=["groups"])
    oauth = doc["routes"]["github-mcp"]["oauth"]
    del oauth["jwks_endpoint"]
    oauth |= {"introspection_endpoint": auth.introspection_url, "client_id": client_id, "client_secret": secret}
    addon = gateway_with(doc)
    admitted = await call(addon, auth.mint_opaque("svc-agent", aud=RESOURCE, groups=["ops"]))
    assert admitted.response is None and admitted.request.headers["X-Authenticated-Groups"] == "ops"
    refused = await call(addon, auth.mint_opaque("svc-agent", aud=RESOURCE, groups=["reader"]))
    assert refused.response.status_code == 403
    inactive = await call(addon, auth.mint_opaque("svc-agent", aud=RESOURCE, groups=["ops"], active=False))
    assert inactive.response.status_code == 401


def test_audit_records_name_the_authenticated_groups():
    from types import SimpleNamespace

    from mcpgw.audit import consumer_of
    from mcpgw.identity.consumers import Identity

    with_groups = Identity("svc-agent", method="oauth", authenticated_groups=("ops", "reader"))
    assert consumer_of(SimpleNamespace(identity=with_groups)) == {
        "name": "svc-agent", "id": None, "custom_id": None, "groups": [], "method": "oauth",
        "authenticated_groups": ["ops", "reader"]}
    assert "authenticated_groups" not in consumer_of(SimpleNamespace(identity=Identity("dev-user")))
