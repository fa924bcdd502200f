"""Token claims forwarded upstream (claim_to_header, upstream_headers) end to end: a real
mitmdump, the test authorization server, the demo upstream and the official MCP client. Forged
client headers of those names never reach the upstream, in any spelling."""

from __future__ import annotations

import httpx
import pytest

from tests.support.gateway import MCP_HEADERS, Gateway, jsonrpc, mcp_session

pytestmark = pytest.mark.e2e

INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
CLAIMS = {"org": {"id": 42, "name": "acme"}, "realm_access": {"roles": ["reader", "writer"]}}


@pytest.fixture(scope="module")
def gateway(workdir, upstream, auth):
    client_id, client_secret = auth.introspection_client
    nested = {"authorization_servers": [auth.url], "jwks_endpoint": auth.jwks_url,
              "upstream_headers": [{"header": "X-Org-Id", "path": ["org", "id"]},
                                   {"header": "X-User-Role", "path": ["realm_access", "roles"]},
                                   {"header": "X-Org", "path": ["org"]}]}
    policy = {
        # the echo answers with every header it received (the MCP upstream records only some)
        "services": {"gh": {"url": upstream.url}, "echo": {"url": upstream.base + "/_test/echo"}},
        "routes": {
            "nested-echo": {"service": "echo", "paths": ["/nested-echo"], "oauth": nested},
            # Kong's nested-claims example
            "nested-mcp": {"service": "gh", "paths": ["/nested-mcp"], "oauth": nested},
            # Kong's basic example: introspection, sub as X-User-Id
            "basic-echo": {"service": "echo", "paths": ["/basic-echo"],
                          "oauth": {"authorization_servers": [auth.url], "introspection_endpoint": auth.introspection_url,
                                    "client_id": client_id, "client_secret": client_secret,
                                    "insecure_relaxed_audience_validation": True,
                                    "claim_to_header": [{"claim": "sub", "header": "X-User-Id"}]}},
        },
    }
    gw = Gateway(workdir, policy, intercept=False)
    yield gw
    gw.stop()


async def post_initialize(url: str, token: str, headers: list[tuple[str, str]] = ()) -> httpx.Response:
    sent = [*MCP_HEADERS.items(), ("Authorization", f"Bearer {token}"), *headers]
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url, json=jsonrpc("initialize", INIT), headers=sent)


async def test_official_client_works_with_claim_headers(gateway, upstream, auth):
    url = gateway.url("/nested-mcp")
    token = auth.mint("alice", aud=url, extra=CLAIMS)
    upstream.reset()
    async with mcp_session(url, gateway=gateway, headers={"Authorization": f"Bearer {token}"}) as session:
        assert (await session.list_tools()).tools
    assert upstream.requests()


async def test_nested_and_array_claims_reach_the_upstream(gateway, auth):
    url = gateway.url("/nested-echo")
    response = await post_initialize(url, auth.mint("alice", aud=url, extra=CLAIMS))
    assert response.status_code == 200
    seen = response.json()
    assert seen["x-org-id"] == "42"
    assert seen["x-user-role"] == "reader, writer"
    assert seen["x-org"] == '{"id":42,"name":"acme"}'
    assert "authorization" not in seen


FORGED = [("X-Org-Id", "1"), ("x_org_id", "2"), ("X-USER-ROLE", "admin"), ("X_User_Role", "admin"), ("x-org", "{}")]


async def test_forged_claim_headers_are_stripped_in_every_spelling(gateway, auth):
    url = gateway.url("/nested-echo")
    seen = (await post_initialize(url, auth.mint("alice", aud=url, extra=CLAIMS), FORGED)).json()
    assert (seen["x-org-id"], seen["x-user-role"], seen["x-org"]) == ("42", "reader, writer", '{"id":42,"name":"acme"}')
    assert "x_org_id" not in seen and "x_user_role" not in seen


async def test_forged_headers_go_even_when_the_token_lacks_the_claims(gateway, auth):
    url = gateway.url("/nested-echo")
    response = await post_initialize(url, auth.mint("bob", aud=url), FORGED)
    assert response.status_code == 200
    assert not {"x-org-id", "x-user-role", "x-org", "x_org_id", "x_user_role"} & set(response.json())


async def test_a_claim_that_cannot_be_a_header_refuses_the_request(gateway, upstream, auth):
    url = gateway.url("/nested-mcp")
    upstream.reset()
    token = auth.mint("alice", aud=url, extra={"org": {"id": "42\r\nX-Admin: true"}})
    response = await post_initialize(url, token)
    assert response.status_code == 401
    assert response.json()["error_description"] == "The access token's org.id claim cannot be forwarded"
    assert upstream.requests() == []


async def test_claim_to_header_with_introspection(gateway, auth):
    url = gateway.url("/basic-echo")
    response = await post_initialize(url, auth.mint("carol", aud="https://anything.example"),
                                     [("X-User-Id", "admin"), ("x_user_id", "admin")])
    assert response.status_code == 200
    seen = response.json()
    assert seen["x-user-id"] == "carol" and "x_user_id" not in seen
