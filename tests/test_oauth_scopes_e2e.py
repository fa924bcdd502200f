"""Scopes a route requires (openid-connect's scopes_required / scopes_claim) end to end: a real
mitmdump, the test authorization server and the demo upstream. Entries are ORed, the scopes of an
entry ANDed; a token without them is refused 403 with the insufficient_scope challenge, and
nothing reaches the upstream."""

from __future__ import annotations

import pytest

from tests.support.gateway import Gateway
from tests.test_oauth_exchange_e2e import post_initialize as initialize

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway(workdir, upstream, auth):
    jwt = {"authorization_servers": [auth.url], "jwks_endpoint": auth.jwks_url}
    policy = {
        "services": {"gh": {"url": upstream.url}},
        "routes": {
            "scoped": {"service": "gh", "paths": ["/scoped"],
                       "oauth": {**jwt, "scopes_required": ["mcp:read mcp:write", "admin"]}},
            "scp": {"service": "gh", "paths": ["/scp"],
                    "oauth": {**jwt, "scopes_required": ["mcp:read"], "scopes_claim": ["scp"]}},
        },
    }
    gw = Gateway(workdir, policy, intercept=False)
    yield gw
    gw.stop()


@pytest.mark.parametrize("scope", ["mcp:read mcp:write", "openid mcp:write mcp:read", "admin", "openid admin"])
async def test_a_token_with_one_entry_wholly_granted_passes(gateway, upstream, auth, scope):
    url = gateway.url("/scoped")
    assert (await initialize(url, auth.mint("granted", aud=url, scope=scope))).status_code == 200


@pytest.mark.parametrize("scope", ["openid", "mcp:read", "mcp:write", "mcp:read mcp:writex", "administrator",
                                   "mcp:read,mcp:write"])
async def test_a_token_without_them_is_403_and_nothing_is_forwarded(gateway, upstream, auth, scope):
    url = gateway.url("/scoped")
    upstream.reset()
    response = await initialize(url, auth.mint("short", aud=url, scope=scope))
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="mcp:read mcp:write"' in challenge
    assert "resource_metadata=" in challenge
    assert response.json()["error"] == "insufficient_scope"
    assert upstream.requests() == []


async def test_scopes_from_a_list_claim(gateway, upstream, auth):
    url = gateway.url("/scp")
    assert (await initialize(url, auth.mint("lister", aud=url, extra={"scp": ["mcp:read", "x"]}))).status_code == 200
    # the standard `scope` string does not count when the route reads `scp`, nor does one list item with a space
    assert (await initialize(url, auth.mint("lister", aud=url, scope="mcp:read"))).status_code == 403
    refused = await initialize(url, auth.mint("lister", aud=url, extra={"scp": ["mcp:read x"]}))
    assert refused.status_code == 403


async def test_an_invalid_token_is_still_401_not_403(gateway, upstream, auth):
    url = gateway.url("/scoped")
    response = await initialize(url, auth.mint("expired", aud=url, scope="admin", exp_in=-60))
    assert response.status_code == 401 and 'error="invalid_token"' in response.headers["www-authenticate"]
