"""Endpoints discovered from the issuer's metadata (RFC 8414 / OpenID Connect Discovery), end to
end: a real mitmdump, the test authorization server (which serves both documents), the demo
upstream and the official MCP client."""

from __future__ import annotations

import httpx
import pytest

from tests.support.authserver import running_auth_server
from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, free_port, jsonrpc, mcp_session

pytestmark = pytest.mark.e2e

INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}


@pytest.fixture(scope="module")
def auth():
    with running_auth_server(issuer_path="/realms/mcp") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(workdir, upstream, auth):
    base = auth.url.removesuffix("/realms/mcp")
    policy = {
        "services": {"gh": {"url": upstream.url}},
        "routes": {
            "discovered": {"service": "gh", "paths": ["/discovered"], "oauth": {"authorization_servers": [auth.url]}},
            # the metadata at this URL names the issuer /realms/mcp: a mismatch, never trusted
            "foreign": {"service": "gh", "paths": ["/foreign"], "oauth": {"authorization_servers": [base]}},
            "nowhere": {"service": "gh", "paths": ["/nowhere"],
                        "oauth": {"authorization_servers": [f"http://127.0.0.1:{free_port()}"], "timeout": 2}},
        },
    }
    gw = Gateway(workdir, policy, intercept=False)
    yield gw
    gw.stop()


async def post(url: str, token: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url, json=jsonrpc("initialize", INIT),
                                 headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"})


async def test_jwks_found_in_the_metadata(gateway, upstream, auth):
    url = gateway.url("/discovered")
    before = auth.jwks_calls
    async with mcp_session(url, gateway=gateway, headers={"Authorization": f"Bearer {auth.mint(aud=url)}"}) as session:
        assert (await session.list_tools()).tools
    assert auth.jwks_calls - before == 1
    upstream.reset()
    assert (await post(url, auth.mint(aud=url, exp_in=-60))).status_code == 401
    assert (await post(url, auth.hs256_with_public_key_token(aud=url))).status_code == 401
    assert upstream.requests() == []


async def test_metadata_of_another_issuer_is_refused(gateway, upstream, auth):
    upstream.reset()
    url = gateway.url("/foreign")
    response = await post(url, auth.mint(aud=url))
    assert response.status_code == 503 and upstream.requests() == []
    assert "names another issuer" in gateway.log()


async def test_unreachable_metadata_means_503(gateway, upstream, auth):
    url = gateway.url("/nowhere")
    upstream.reset()
    assert (await post(url, auth.mint(aud=url))).status_code == 503
    assert upstream.requests() == []
