"""Groups the caller's token authenticates (openid-connect's authenticated_groups_claim), route access
by them (the acl plugin's always_use_authenticated_groups rule) and groups_required, end to end: a
real mitmdump, the test authorization server minting tokens with Keycloak-style realm roles, the
demo upstream and the official MCP client; the same through a decK file with openid-connect + acl."""

from __future__ import annotations

import httpx
import pytest
import yaml
from mcp.shared.exceptions import McpError

from tests.support.gateway import Gateway, mcp_session
from tests.test_oauth_exchange_e2e import post_initialize as initialize

pytestmark = pytest.mark.e2e

REALM = ["realm_access", "roles"]


def roles(*names: str) -> dict:
    return {"realm_access": {"roles": list(names)}}


# Per-tool ACLs matching the token's authenticated groups (governance/groups.py)
TOOL_ACL = {"include_consumer_groups": True, "default_acl": [{"scope": "tools", "allow": ["ops"]}],
            "tools": [{"name": "push_files", "acl": {"allow": ["admin"]}}]}


@pytest.fixture(scope="module")
def gateway(workdir, upstream, auth):
    oauth = {"authorization_servers": [auth.url], "jwks_endpoint": auth.jwks_url, "consumer_claim": ["sub"],
             "consumer_by": ["username"], "consumer_optional": True, "authenticated_groups_claim": REALM}
    policy = {
        "consumers": {"dev-user": {"acls": ["dev"]}, "ops-user": {"acls": ["ops"]}},
        "services": {"gh": {"url": upstream.url}},
        "routes": {
            "groups": {"service": "gh", "paths": ["/groups"], "oauth": oauth, "access": {"allow": ["ops"]}},
            "always": {"service": "gh", "paths": ["/always"], "oauth": oauth,
                       "access": {"allow": ["ops"], "always_use_authenticated_groups": True}},
            "tools": {"service": "gh", "paths": ["/tools"], "oauth": oauth, "acl": TOOL_ACL},
            "required": {"service": "gh", "paths": ["/required"],
                         "oauth": {**oauth, "groups_required": ["staff ops", "admin"], "groups_claim": REALM}},
        },
    }
    gw = Gateway(workdir, policy, intercept=False)
    yield gw
    gw.stop()


async def tools(gateway: Gateway, url: str, token: str, headers: dict | None = None) -> int:
    async with mcp_session(url, gateway=gateway, headers={"Authorization": f"Bearer {token}", **(headers or {})}) as session:
        return len((await session.list_tools()).tools)


def group_headers(upstream) -> set[tuple]:
    return {tuple((k, v) for k, v in sorted(r["headers"].items()) if "groups" in k) for r in upstream.requests()}


async def test_a_token_without_a_consumer_uses_the_mcp_route_by_its_groups(gateway, upstream, auth):
    url = gateway.url("/groups")
    upstream.reset()
    forged = {"X-Authenticated-Groups": "admin", "X_Authenticated_Groups": "admin", "X-Consumer-Groups": "admin"}
    assert await tools(gateway, url, auth.mint("svc-agent", aud=url, extra=roles("ops", "reader")), forged) > 0
    # Kong's header with the token's groups, nothing the client sent
    assert group_headers(upstream) == {(("x-authenticated-groups", "ops, reader"),)}


async def test_attack_no_claim_or_other_groups_with_forged_headers_get_nothing(gateway, upstream, auth):
    url = gateway.url("/groups")
    forged = {"X-Authenticated-Groups": "ops", "X-Consumer-Groups": "ops", "X_Authenticated_Groups": "ops"}
    upstream.reset()
    for extra in ({}, roles("reader"), {"groups": ["ops"]}, {"realm_access": "ops"}):
        response = await initialize(url, auth.mint("svc-agent", aud=url, extra=extra), forged)
        assert response.status_code == 403 and response.json() == {"message": "You cannot consume this service"}
    assert upstream.requests() == []
    with pytest.raises(BaseExceptionGroup) as refused:  # the official client gets nothing either
        await tools(gateway, url, auth.mint("svc-agent", aud=url, extra=roles("reader")))
    assert refused.group_contains(httpx.HTTPStatusError, match="403 Forbidden")
    assert upstream.requests() == []


async def test_attack_a_token_of_another_audience_is_refused_first(gateway, upstream, auth):
    url = gateway.url("/groups")
    upstream.reset()
    response = await initialize(url, auth.mint("svc-agent", aud=gateway.url("/always"), extra=roles("ops")))
    assert response.status_code == 401 and 'error="invalid_token"' in response.headers["www-authenticate"]
    assert upstream.requests() == []


async def test_a_mapped_consumer_by_always_use_authenticated_groups(gateway, upstream, auth):
    groups, always = gateway.url("/groups"), gateway.url("/always")
    # dev-user's own acls are [dev]: false matches them; true matches the token's ops
    assert (await initialize(groups, auth.mint("dev-user", aud=groups, extra=roles("ops")))).status_code == 403
    upstream.reset()
    assert await tools(gateway, always, auth.mint("dev-user", aud=always, extra=roles("ops"))) > 0
    assert group_headers(upstream) == {(("x-authenticated-groups", "ops"),)}
    # ops-user's acls are [ops]: true matches the token's groups alone, never mixed with the consumer's
    assert (await initialize(always, auth.mint("ops-user", aud=always, extra=roles("dev")))).status_code == 403
    # ... and falls back to the consumer's when the token names none
    upstream.reset()
    assert await tools(gateway, always, auth.mint("ops-user", aud=always)) > 0
    assert group_headers(upstream) == {(("x-consumer-groups", "ops"),)}


async def tool_names(gateway: Gateway, url: str, token: str, headers: dict | None = None) -> set[str]:
    async with mcp_session(url, gateway=gateway, headers={"Authorization": f"Bearer {token}", **(headers or {})}) as session:
        return {t.name for t in (await session.list_tools()).tools}


async def test_tool_acls_match_the_token_groups_in_lists_and_calls(gateway, upstream, auth):
    url = gateway.url("/tools")
    ops = auth.mint("svc-agent", aud=url, extra=roles("ops"))
    listed = await tool_names(gateway, url, ops)
    assert "search_repositories" in listed and "push_files" not in listed
    assert await tool_names(gateway, url, auth.mint("svc-agent", aud=url, extra=roles("admin"))) == {"push_files"}
    upstream.reset()
    async with mcp_session(url, gateway=gateway, headers={"Authorization": f"Bearer {ops}"}) as session:
        assert not (await session.call_tool("search_repositories", {"query": "kong"})).isError
        with pytest.raises(McpError, match="not available for consumer group 'ops'"):
            await session.call_tool("push_files", {"owner": "o", "repo": "r", "branch": "b", "files": [],
                                                   "message": "m"})
    assert upstream.tool_calls() == ["search_repositories"]


async def test_attack_tool_acls_ignore_forged_headers_and_malformed_claims(gateway, upstream, auth):
    url = gateway.url("/tools")
    forged = {"X-Authenticated-Groups": "ops", "X_Authenticated_Groups": "admin", "X-Consumer-Groups": "admin"}
    for extra in ({}, {"realm_access": {"roles": {"admin": True}}}, {"realm_access": "ops"}, {"groups": ["ops"]}):
        assert await tool_names(gateway, url, auth.mint("svc-agent", aud=url, extra=extra), forged) == set()
    upstream.reset()
    async with mcp_session(url, gateway=gateway, headers={"Authorization": f"Bearer {auth.mint('svc-agent', aud=url)}",
                                                          **forged}) as session:
        with pytest.raises(McpError, match="not available for consumer 'svc-agent'"):
            await session.call_tool("search_repositories", {"query": "kong"})
    assert upstream.tool_calls() == []


async def test_groups_required(gateway, upstream, auth):
    url = gateway.url("/required")
    for granted in (roles("staff", "ops"), roles("admin")):
        assert await tools(gateway, url, auth.mint("svc", aud=url, extra=granted)) > 0
    upstream.reset()
    for granted in (roles("staff"), roles("ops"), {}, {"groups": ["admin"]}):
        response = await initialize(url, auth.mint("svc", aud=url, extra=granted))
        assert response.status_code == 403 and response.json()["error"] == "insufficient_scope"
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert upstream.requests() == []


def deck_file(upstream, auth) -> str:
    return yaml.safe_dump({
        "_format_version": "3.0",
        "consumers": [{"username": "dev-user", "acls": [{"group": "dev"}]}],
        "services": [{"name": "mcp", "url": upstream.url, "routes": [{"name": "mcp-route", "paths": ["/mcp"]},
                                                                      {"name": "aud-route", "paths": ["/aud"]}]}],
        "plugins": [
            {"name": "ai-mcp-proxy", "route": "mcp-route", "config": {"mode": "passthrough-listener"}},
            {"name": "ai-mcp-proxy", "route": "aud-route", "config": {"mode": "passthrough-listener"}},
            {"name": "openid-connect", "route": "aud-route", "config": {
                "issuer": auth.url, "auth_methods": ["bearer"], "hide_credentials": True,
                "audience_required": ["mcp-gateway", "https://a.example https://b.example"],
                "audience_claim": AUDIENCE_CLAIM}},
            {"name": "openid-connect", "route": "mcp-route", "config": {
                "issuer": auth.url, "auth_methods": ["bearer"], "bearer_token_param_type": ["header"],
                "consumer_claim": ["sub"], "consumer_by": ["username"], "consumer_optional": True,
                "authenticated_groups_claim": REALM, "hide_credentials": True}},
            {"name": "acl", "route": "mcp-route", "config": {"allow": ["ops"], "always_use_authenticated_groups": True,
                                                             "include_consumer_groups": False}},
        ],
    })


AUDIENCE_CLAIM = ["resource_access", "audiences"]  # openid-connect's audience_claim, a claim path


def audiences(*names) -> dict:
    return {"resource_access": {"audiences": list(names)}}


async def test_deck_openid_connect_with_acl(workdir, upstream, auth):
    gw = Gateway(workdir, deck_file(upstream, auth) + "\n", intercept=False, name="deck")
    try:
        url = gw.url("/mcp")
        assert await tools(gw, url, auth.mint("dev-user", aud="any", extra=roles("ops"))) > 0
        assert await tools(gw, url, auth.mint("svc-agent", aud="any", extra=roles("ops"))) > 0
        upstream.reset()
        for sub, extra in (("dev-user", {}), ("svc-agent", roles("dev")), ("svc-agent", {})):
            response = await initialize(url, auth.mint(sub, aud="any", extra=extra), {"X-Authenticated-Groups": "ops"})
            assert response.status_code == 403
        assert upstream.requests() == []
        # audience_required, any one entry (all audiences of it) in the claim audience_claim names
        aud = gw.url("/aud")
        for claims in (audiences("mcp-gateway"), audiences("x", "https://b.example", "https://a.example")):
            assert await tools(gw, aud, auth.mint("svc", aud="elsewhere", extra=claims)) > 0
        upstream.reset()
        for where, claims in (("mcp-gateway", {}), (aud, audiences("https://a.example")),  # half an entry
                              ("mcp-gateway", {"resource_access": {"aud": ["mcp-gateway"]}}),  # another claim
                              (None, audiences("mcp-gateway", 7)), (None, audiences()),
                              (None, {"resource_access": {"audiences": {"mcp-gateway": True}}})):
            response = await initialize(aud, auth.mint("svc", aud=where, extra=claims))
            assert response.status_code == 401 and 'error="invalid_token"' in response.headers["www-authenticate"]
        assert upstream.requests() == []
    finally:
        gw.stop()
