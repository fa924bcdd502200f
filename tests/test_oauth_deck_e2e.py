"""Kong's ai-mcp-oauth2 documentation examples, as decK files (../shared/kong-docs/cases/), loaded
by a real mitmdump and tried as their pages describe: 08 (claim_to_header with introspection),
10 (nested claims as headers), 11 (token exchange with an actor token) and 24 (the Keycloak
token-exchange how-to, client_auth inherit), 32 (openid-connect introspection) and 22's
claim-ACL route (decK's ai2kong output) given the ai-mcp-oauth2 plugin it lacks. Only the
addresses change: the examples' upstream (host.docker.internal) becomes the demo upstream, the
DECK_* variables name the test authorization server."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.gateway import MCP_HEADERS, Gateway, jsonrpc, mcp_session
from tests.support.rest_upstream import RestUpstream

CASES = Path(__file__).resolve().parents[2] / "shared" / "kong-docs" / "cases"
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not CASES.is_dir(), reason="the Kong docs corpus is not beside this checkout")]
INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
RESOURCE = "https://mcp.example.com/mcp"


def payload(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def start(workdir: Path, case: str, name: str, address: str, replacement: str, env: dict[str, str]) -> Gateway:
    text = (CASES / case).read_text()
    assert address in text
    return Gateway(workdir, text.replace(address, replacement), intercept=False, name=name, env=env)


async def post(gateway: Gateway, path: str, token: str, headers: list[tuple[str, str]] = (),
               host: str = "mcp.example.com") -> httpx.Response:
    sent = [*MCP_HEADERS.items(), ("Host", host), ("Authorization", f"Bearer {token}"), *headers]
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(gateway.url(path), json=jsonrpc("initialize", INIT), headers=sent)


async def test_08_basic_example_forwards_sub_as_x_user_id(workdir, upstream, auth):
    client_id, secret = auth.introspection_client
    gw = start(workdir, "08-mcp-oauth2-basic-example.yaml", "gw08", "http://host.docker.internal:3001",
               upstream.base + "/_test/echo",
               {"DECK_MCP_AUTH_URL": RESOURCE, "DECK_KEYCLOAK_AUTHZ_URL": auth.url,
                "DECK_KEYCLOAK_INTROSPECTION_URL": auth.introspection_url, "DECK_CLIENT_ID": client_id,
                "DECK_CLIENT_SECRET": secret})
    try:
        # insecure_relaxed_audience_validation: a token for another audience is accepted, as the page says
        response = await post(gw, "/mcp", auth.mint("alice", aud="account"), [("x_user_id", "admin")])
        assert response.status_code == 200
        seen = response.json()
        assert seen["x-user-id"] == "alice" and "x_user_id" not in seen and "authorization" not in seen
        assert (await post(gw, "/mcp", auth.mint("alice", aud="account", exp_in=-30))).status_code == 401
    finally:
        gw.stop()


async def test_10_nested_claims_become_headers(workdir, upstream, auth):
    gw = start(workdir, "10-mcp-oauth2-nested-claims-example.yaml", "gw10", "http://host.docker.internal:3001",
               upstream.base + "/_test/echo",
               {"DECK_MCP_RESOURCE_URL": RESOURCE, "DECK_AUTHORIZATION_SERVER_URL": auth.url,
                "DECK_JWKS_ENDPOINT_URL": auth.jwks_url})
    try:
        token = auth.mint("alice", aud=RESOURCE, extra={"org": {"id": "acme-42"},
                                                        "realm_access": {"roles": ["mcp-reader", "mcp-writer"]}})
        response = await post(gw, "/mcp", token, [("X-Org-Id", "forged"), ("X_User_Role", "admin")])
        assert response.status_code == 200
        seen = response.json()
        assert seen["x-org-id"] == "acme-42" and seen["x-user-role"] == "mcp-reader, mcp-writer"
        assert "x_user_role" not in seen
        assert (await post(gw, "/mcp", auth.mint("alice", aud="https://other.example/mcp"))).status_code == 401
    finally:
        gw.stop()


async def test_11_token_exchange_example_with_actor_token(workdir, upstream, auth):
    client_id, secret = auth.introspection_client
    gw = start(workdir, "11-mcp-oauth2-token-exchange-example.yaml", "gw11", "http://host.docker.internal:3001",
               upstream.url,
               {"DECK_MCP_RESOURCE_URL": RESOURCE, "DECK_AUTHORIZATION_SERVER_URL": auth.url,
                "DECK_INTROSPECTION_ENDPOINT_URL": auth.introspection_url, "DECK_CLIENT_ID": client_id,
                "DECK_CLIENT_SECRET": secret, "DECK_TOKEN_EXCHANGE_ENDPOINT_URL": auth.token_url,
                "DECK_EXCHANGE_CLIENT_ID": client_id, "DECK_EXCHANGE_CLIENT_SECRET": secret})
    try:
        user, actor = auth.mint("alice", aud=RESOURCE), auth.mint("agent", aud=auth.url)
        upstream.reset()
        assert (await post(gw, "/mcp", user)).status_code == 401  # the example's actor token header is required
        assert upstream.requests() == []
        before = auth.exchange_calls
        for _ in range(2):
            assert (await post(gw, "/mcp", user, [("X-Actor-Token", actor)])).status_code == 200
        assert auth.exchange_calls - before == 1  # cache.enabled, ttl 3600
        (sent,) = {r["headers"]["authorization"] for r in upstream.requests()}
        exchanged = sent.removeprefix("Bearer ")
        assert exchanged != user and payload(exchanged)["sub"] == "alice"
        assert payload(exchanged)["scope"] == "mcp:read" and payload(exchanged)["act"] == {"sub": "agent"}
        form = auth.exchange_requests[-1]
        assert form["subject_token_type"] == form["requested_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
        log = gw.log()
        assert user not in log and exchanged not in log and actor not in log and secret not in log
    finally:
        gw.stop()


async def test_24_keycloak_howto_inherits_the_introspection_client(workdir, upstream, auth):
    client_id, secret = auth.introspection_client
    gw = start(workdir, "24-oauth2-token-exchange-keycloak-howto.yaml", "gw24", "http://host.docker.internal:3002/mcp",
               upstream.url,
               {"DECK_TOKEN_EXCHANGE_KEYCLOAK_ISSUER": auth.url,
                "DECK_TOKEN_EXCHANGE_KEYCLOAK_INTROSPECTION_URL": auth.introspection_url,
                "DECK_TOKEN_EXCHANGE_GATEWAY_CLIENT_ID": client_id, "DECK_TOKEN_EXCHANGE_GATEWAY_CLIENT_SECRET": secret,
                "DECK_TOKEN_EXCHANGE_KEYCLOAK_TOKEN_URL": auth.token_url})
    try:
        user = auth.mint("alice", aud="account")
        upstream.reset()
        response = await post(gw, "/mcp-exchange", user, [("X-User-Id", "admin")], host="localhost:8000")
        assert response.status_code == 200
        (request,) = [r for r in upstream.requests() if r["method"] == "POST"]
        exchanged = request["headers"]["authorization"].removeprefix("Bearer ")
        assert exchanged != user and payload(exchanged)["sub"] == "alice"
        assert payload(exchanged)["client_id"] == client_id  # the gateway's own client, inherited
        assert auth.exchange_requests[-1]["client_id"] == client_id  # client_secret_post, as introspection
        auth.refuse_exchange_for.add("eve")
        upstream.reset()
        refused = await post(gw, "/mcp-exchange", auth.mint("eve", aud="account"), host="localhost:8000")
        assert refused.status_code == 401 and upstream.requests() == []
    finally:
        gw.stop()


async def test_32_openid_connect_introspection_discovers_the_endpoint(workdir, upstream, auth):
    client_id, secret = auth.introspection_client
    gw = start(workdir, "32-openid-connect-introspection-on-mcp.yaml", "gw32", "http://host.docker.internal:3001",
               upstream.base + "/_test/echo",
               {"DECK_ISSUER": auth.url, "DECK_CLIENT_ID": client_id, "DECK_CLIENT_SECRET": secret})
    try:
        token = auth.mint("alice", aud="account")
        before = auth.introspection_calls
        response = await post(gw, "/mcp", token, host=gw.url().split("//")[1])
        assert response.status_code == 200
        assert auth.introspection_calls - before == 1  # at the endpoint the issuer's metadata names
        assert response.json()["authorization"] == f"Bearer {token}"  # openid-connect's default: hide_credentials false
        auth.revoke(revoked := auth.mint("bob", aud="account"))
        refused = await post(gw, "/mcp", revoked, host=gw.url().split("//")[1])
        assert refused.status_code == 401 and refused.json()["error_description"] == "The access token is not active"
        assert (await post(gw, "/mcp", auth.mint("carol", aud="account", exp_in=-60),
                           host=gw.url().split("//")[1])).status_code == 401
    finally:
        gw.stop()


async def test_22_claim_acl_route_with_ai_mcp_oauth2(workdir, auth):
    """Case 22's first route as decK wrote it (conversion-listener, a tool ACL on the nested claim
    .user.email: gold and premium allowed, platinum denied), its service pointed at a REST API
    and the ai-mcp-oauth2 plugin it needs added (without one it is refused at load)."""
    rest = RestUpstream().start()
    doc = yaml.safe_load((CASES / "22-deck-fixture-ai2kong-mcp-output.yaml").read_text())
    service = doc["services"][0]
    host, port = rest.url.removeprefix("http://").split(":")
    service.update(host=host, port=int(port))
    resource = "https://mcp.example.com/mcp/secure-flights"
    service["routes"][0]["plugins"].append({"name": "ai-mcp-oauth2", "config": {
        "resource": resource, "authorization_servers": [auth.url], "jwks_endpoint": auth.jwks_url}})
    gw = Gateway(workdir, yaml.safe_dump({**doc, "services": [service]}), intercept=False, name="gw22")

    def token(sub: str, **claims) -> str:
        return auth.mint(sub, aud=resource, extra=claims)

    try:
        url = gw.url("/mcp/secure-flights")
        for level in ("gold", "premium", ["premium", "silver"]):
            async with mcp_session(url, gateway=gw, headers={"Authorization": f"Bearer {token('u', user={'email': level})}"}) as session:
                assert [t.name for t in (await session.list_tools()).tools] == ["searchFlights"]
                assert not (await session.call_tool("searchFlights", {})).isError
        assert [(r["method"], r["path"]) for r in rest.received] == [("GET", "/flights")] * 3
        rest.reset()
        # deny wins; another claim value, the claim at the top level or under a dotted name, none:
        # no tool is allowed, so the caller cannot connect (Kong's rule for such a caller)
        for claims in ({"user": {"email": "platinum"}}, {"user": {"email": ["gold", "platinum"]}},
                       {"user": {"email": "silver"}}, {"email": "gold"}, {"user.email": "gold"},
                       {"user": {"email": {"level": "gold"}}}, {}):
            refused = await post(gw, "/mcp/secure-flights", token("u", **claims), [("X-User-Email", "gold")])
            assert refused.status_code == 200 and refused.json()["error"]["code"] == -32602, claims
            assert refused.json()["error"]["message"] == "No tool is available for the access token's .user.email"
        assert (await post(gw, "/mcp/secure-flights", auth.mint("u", aud="https://other.example/mcp",
                                                                 extra={"user": {"email": "gold"}}))).status_code == 401
        assert rest.received == []
    finally:
        gw.stop()
        rest.stop()
