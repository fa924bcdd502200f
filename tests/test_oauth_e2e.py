"""The OAuth resource server end to end: a real mitmdump running the gateway in front of the demo
upstream, the test authorization server, and the official MCP client.

The client starts with no token, is challenged by the gateway, discovers the authorization server
from the PRM the gateway serves, registers, authorizes with PKCE, and calls tools with a JWT that
the gateway checks against the JWKS. A second route validates opaque tokens by introspection."""

from __future__ import annotations


import httpx
import pytest

from tests.support.oauth_client import oauth_provider
from tests.support.authserver import AuthServer, running_auth_server
from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, free_port, jsonrpc, mcp_session

pytestmark = pytest.mark.e2e

INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
SEARCH = {"query": "kong gateway language:go"}


@pytest.fixture(scope="module")
def opaque_auth():
    with running_auth_server(token_format="opaque") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(workdir, upstream, auth, opaque_auth):
    client_id, client_secret = opaque_auth.introspection_client
    policy = {
        "consumer_groups": ["developer", "admin"],
        "consumers": {"dev-user": {"groups": ["developer"]}},
        "services": {"gh": {"url": upstream.url}},
        "routes": {
            "jwt-mcp": {
                "service": "gh", "paths": ["/jwt-mcp"], "upstream_identity_headers": True,
                "oauth": {"authorization_servers": [auth.url], "jwks_endpoint": auth.jwks_url,
                          "scopes_supported": ["openid"], "consumer_claim": ["sub"],
                          "consumer_groups_claim": ["groups"]},
            },
            "introspected-mcp": {
                "service": "gh", "paths": ["/introspected-mcp"], "upstream_identity_headers": True,
                "oauth": {"authorization_servers": [opaque_auth.url],
                          "introspection_endpoint": opaque_auth.introspection_url,
                          "client_id": client_id, "client_secret": "{env://INTROSPECTION_SECRET}",
                          "consumer_claim": ["sub"], "consumer_optional": True},
            },
            "unreachable-idp-mcp": {
                "service": "gh", "paths": ["/unreachable-idp-mcp"],
                "oauth": {"authorization_servers": [auth.url], "jwks_endpoint": f"http://127.0.0.1:{free_port()}/jwks",
                          "timeout": 2},
            },
        },
    }
    gw = Gateway(workdir, policy, intercept=False, env={"INTROSPECTION_SECRET": client_secret})
    yield gw
    gw.stop()


async def post_initialize(url: str, token: str | None = None) -> httpx.Response:
    headers = dict(MCP_HEADERS, **({"Authorization": f"Bearer {token}"} if token else {}))
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url, json=jsonrpc("initialize", INIT), headers=headers)


async def test_sdk_client_discovers_authorizes_and_calls_a_tool(gateway, upstream, auth):
    route_url = gateway.url("/jwt-mcp")
    prm_url = gateway.url("/.well-known/oauth-protected-resource/jwt-mcp")

    # What the client sees first: the challenge, and the PRM it points at.
    refused = await post_initialize(route_url)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == f'Bearer resource_metadata="{prm_url}"'
    assert refused.json() == {"error": "unauthorized", "error_description": "Missing access token"}
    async with httpx.AsyncClient(timeout=10) as client:
        prm = (await client.get(prm_url)).json()
    assert prm["resource"] == route_url
    assert prm["authorization_servers"] == [auth.url]
    assert prm["scopes_supported"] == ["openid"]

    upstream.reset()
    provider, storage = oauth_provider(route_url)
    async with mcp_session(route_url, gateway=gateway, auth=provider) as session:
        tools = (await session.list_tools()).tools
        assert "search_repositories" in {t.name for t in tools}
        result = await session.call_tool("search_repositories", SEARCH)
        assert not result.isError

    assert storage.client_info is not None  # registered dynamically
    assert storage.tokens is not None
    assert upstream.tool_calls() == ["search_repositories"]
    seen = upstream.requests()
    assert seen and all("authorization" not in r["headers"] for r in seen)  # passthrough_credentials: false
    assert {r["headers"].get("x-consumer-username") for r in seen} == {"dev-user"}
    assert {r["headers"].get("x-consumer-groups") for r in seen} == {"developer"}


async def test_invalid_jwts_never_reach_the_upstream(gateway, upstream, auth):
    route_url = gateway.url("/jwt-mcp")
    upstream.reset()
    for token in (auth.mint(aud=route_url, exp_in=-60), auth.mint(aud=gateway.url("/other")),
                  auth.alg_none_token(aud=route_url), auth.hs256_with_public_key_token(aud=route_url),
                  auth.mint(aud=route_url, kid="unknown")):
        response = await post_initialize(route_url, token)
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert upstream.requests() == []
    assert (await post_initialize(route_url, auth.mint(aud=route_url))).status_code == 200


async def test_introspected_opaque_token_is_cached_across_a_session(gateway, upstream, opaque_auth):
    route_url = gateway.url("/introspected-mcp")
    token = opaque_auth.mint_opaque("someone", aud=route_url)
    upstream.reset()
    before = opaque_auth.introspection_calls
    async with mcp_session(route_url, gateway=gateway, headers={"Authorization": f"Bearer {token}"}) as session:
        await session.list_tools()
        await session.call_tool("search_repositories", SEARCH)
        await session.call_tool("search_repositories", SEARCH)
    seen = upstream.requests()
    assert len(seen) >= 4  # initialize, initialized, tools/list, two tools/call (and the stream)
    assert opaque_auth.introspection_calls - before == 1
    assert all("authorization" not in r["headers"] for r in seen)
    assert {r["headers"].get("x-consumer-username") for r in seen} == {"someone"}  # no consumer: the subject, kept for audit


async def test_inactive_opaque_token_is_refused(gateway, upstream, opaque_auth):
    route_url = gateway.url("/introspected-mcp")
    token = opaque_auth.mint_opaque(aud=route_url, active=False)
    upstream.reset()
    response = await post_initialize(route_url, token)
    assert response.status_code == 401
    assert response.json()["error_description"] == "The access token is not active"
    assert upstream.requests() == []
    log = gateway.log()
    assert token not in log and opaque_auth.introspection_client[1] not in log


async def test_unreachable_identity_provider_means_503(gateway, upstream, auth):
    route_url = gateway.url("/unreachable-idp-mcp")
    upstream.reset()
    response = await post_initialize(route_url, auth.mint(aud=route_url))
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert upstream.requests() == []
