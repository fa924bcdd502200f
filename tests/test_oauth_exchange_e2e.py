"""RFC 8693 token exchange end to end: a real mitmdump running the gateway, the test authorization
server (its token-exchange grant), the demo upstream and the official MCP client.

The upstream must receive a token exchanged for the caller's (its audience, the caller's
subject), never the caller's own; one exchange serves a subject until shortly before the
exchanged token expires; a refused or failed exchange forwards nothing and is audited."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from tests.support.gateway import MCP_HEADERS, Gateway, free_port, jsonrpc, mcp_session

pytestmark = pytest.mark.e2e

INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
SEARCH = {"query": "kong gateway language:go"}
UPSTREAM_AUDIENCE = "https://github-mcp.internal/mcp"


def payload(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


@pytest.fixture(scope="module")
def gateway(workdir, upstream, auth):
    client_id, client_secret = auth.introspection_client
    jwt_oauth = {"authorization_servers": [auth.url], "jwks_endpoint": auth.jwks_url}
    exchange = {"token_endpoint": auth.token_url, "client_auth": "client_secret_basic", "client_id": client_id,
                "client_secret": "{env://EXCHANGE_SECRET}",
                "request": {"resource": UPSTREAM_AUDIENCE, "scopes": ["mcp:read"]}}
    policy = {
        # the echo answers with every header it received (the MCP upstream records only some)
        "services": {"gh": {"url": upstream.url}, "echo": {"url": upstream.base + "/_test/echo"}},
        "routes": {
            "exchange-mcp": {"service": "gh", "paths": ["/exchange-mcp"], "upstream_identity_headers": True,
                             "oauth": {**jwt_oauth, "token_exchange": exchange}},
            # Kong's Keycloak how-to: introspection, and the exchange with the same client (inherit)
            "inherit-mcp": {"service": "gh", "paths": ["/inherit-mcp"],
                            "oauth": {"authorization_servers": [auth.url], "introspection_endpoint": auth.introspection_url,
                                      "client_id": client_id, "client_secret": "{env://EXCHANGE_SECRET}",
                                      "client_auth": "client_secret_post", "passthrough_credentials": True,
                                      "token_exchange": {"token_endpoint": auth.token_url, "client_auth": "inherit",
                                                         "request": {"audience": ["github-mcp"]}}}},
            "actor-mcp": {"service": "gh", "paths": ["/actor-mcp"],
                          "oauth": {**jwt_oauth, "token_exchange": {
                              **exchange, "request": {"resource": UPSTREAM_AUDIENCE, "actor_token_source": "header",
                                                      "actor_token_header": "X-Actor-Token"}}}},
            "nocache-mcp": {"service": "gh", "paths": ["/nocache-mcp"],
                            "oauth": {**jwt_oauth, "token_exchange": {**exchange, "cache": {"enabled": False}}}},
            "claims-echo": {"service": "echo", "paths": ["/claims-echo"],
                           "oauth": {**jwt_oauth, "token_exchange": exchange, "upstream_headers": [
                               {"header": "X-Org-Id", "path": ["org", "id"]},
                               {"header": "X-Token-Client", "path": ["client_id"]}]}},
            "acl-mcp": {"service": "gh", "paths": ["/acl-mcp"],
                        "oauth": {**jwt_oauth, "token_exchange": exchange},
                        "acl": {"acl_attribute_type": "oauth_access_token", "access_token_claim_field": ".team",
                                "default_acl": [{"scope": "tools", "allow": ["agents"]}]}},
            "down-mcp": {"service": "gh", "paths": ["/down-mcp"],
                         "oauth": {**jwt_oauth, "timeout": 2, "token_exchange": {
                             **exchange, "token_endpoint": f"http://127.0.0.1:{free_port()}/token"}}},
        },
    }
    gw = Gateway(workdir, policy, intercept=False, env={"EXCHANGE_SECRET": client_secret},
                 extra=["--set", f"mcp_audit={workdir / 'audit.jsonl'}"])
    yield gw
    gw.stop()


def audit_records(workdir, rule: str) -> list[dict]:
    """The audit records of refusals by `rule`, waiting briefly for the record to be written."""
    path = workdir / "audit.jsonl"
    for _ in range(50):
        lines = path.read_text().splitlines() if path.exists() else []
        found = [r for r in map(json.loads, filter(str.strip, lines)) if r.get("rule") == rule]
        if found:
            return found
        time.sleep(0.1)
    return []


def wait_for_records(workdir, match, count: int, deadline: float = 10.0) -> list[dict]:
    """The audit records `match` accepts once there are `count` of them (or what there is at the deadline)."""
    path, end, found = workdir / "audit.jsonl", time.monotonic() + deadline, []
    while time.monotonic() < end:
        lines = path.read_text().splitlines() if path.exists() else []
        found = [r for r in map(json.loads, filter(str.strip, lines)) if match(r)]
        if len(found) >= count:
            break
        time.sleep(0.1)
    return found


async def post_initialize(url: str, token: str | None, headers: dict | None = None) -> httpx.Response:
    sent = dict(MCP_HEADERS, **({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {}))
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url, json=jsonrpc("initialize", INIT), headers=sent)


def upstream_tokens(upstream) -> list[str]:
    values = [r["headers"].get("authorization", "") for r in upstream.requests()]
    assert all(v.startswith("Bearer ") for v in values), values
    return [v.removeprefix("Bearer ") for v in values]


async def test_upstream_receives_the_exchanged_token_never_the_callers(gateway, upstream, auth, workdir):
    url = gateway.url("/exchange-mcp")
    user_token = auth.mint("alice", aud=url)
    upstream.reset()
    before = auth.exchange_calls
    async with mcp_session(url, gateway=gateway, headers={"Authorization": f"Bearer {user_token}"}) as session:
        await session.list_tools()
        result = await session.call_tool("search_repositories", SEARCH)
        assert not result.isError
        await session.call_tool("search_repositories", SEARCH)
    assert auth.exchange_calls - before == 1  # one exchange for the whole session
    sent = upstream_tokens(upstream)
    assert len(sent) >= 4 and len(set(sent)) == 1
    exchanged = sent[0]
    assert exchanged != user_token and exchanged in auth.exchanged_tokens
    assert user_token not in json.dumps(upstream.requests())
    claims = payload(exchanged)
    assert claims["sub"] == "alice" and claims["aud"] == UPSTREAM_AUDIENCE and claims["scope"] == "mcp:read"
    form = auth.exchange_requests[-1]
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange"
    assert form["subject_token"] == user_token and form["resource"] == UPSTREAM_AUDIENCE
    assert {r["headers"].get("x-consumer-username") for r in upstream.requests()} == {"alice"}
    log = gateway.log()
    assert user_token not in log and exchanged not in log and auth.introspection_client[1] not in log
    # every record of the session names the exchange (from the cache after the first), never a token
    records = wait_for_records(workdir, lambda r: (r.get("consumer") or {}).get("name") == "alice"
                               and (r.get("jsonrpc") or {}).get("method") == "tools/call", 2)
    assert [r["token_exchange"] for r in records[-2:]] == [
        {"subject": "alice", "audience": UPSTREAM_AUDIENCE, "issuer": auth.url, "cached": True}] * 2
    text = (workdir / "audit.jsonl").read_text()
    assert user_token not in text and exchanged not in text


async def test_cache_is_per_caller_token(gateway, upstream, auth):
    url = gateway.url("/exchange-mcp")
    bob = auth.mint("bob", aud=url)
    before = auth.exchange_calls
    assert (await post_initialize(url, bob)).status_code == 200
    assert (await post_initialize(url, bob)).status_code == 200
    assert auth.exchange_calls - before == 1  # the same token: served from the cache
    assert (await post_initialize(url, auth.mint("bob", aud=url))).status_code == 200  # a new token, same subject
    assert auth.exchange_calls - before == 2  # exchanged again: an exchanged token serves only its own token
    upstream.reset()
    assert (await post_initialize(url, auth.mint("carol", aud=url))).status_code == 200
    assert auth.exchange_calls - before == 3
    assert payload(upstream_tokens(upstream)[0])["sub"] == "carol"  # never bob's token


async def test_without_cache_every_request_is_exchanged(gateway, upstream, auth):
    url = gateway.url("/nocache-mcp")
    token = auth.mint("dave", aud=url)
    before = auth.exchange_calls
    for _ in range(2):
        assert (await post_initialize(url, token)).status_code == 200
    assert auth.exchange_calls - before == 2


async def test_inherit_uses_the_introspection_client_and_replaces_a_passthrough_token(gateway, upstream, auth):
    url = gateway.url("/inherit-mcp")
    user_token = auth.mint("erin", aud=url)
    upstream.reset()
    response = await post_initialize(url, user_token)
    assert response.status_code == 200
    (exchanged,) = set(upstream_tokens(upstream))
    assert exchanged != user_token  # passthrough_credentials passes the exchanged token, as in Kong
    assert payload(exchanged)["aud"] == "github-mcp" and payload(exchanged)["sub"] == "erin"
    form = auth.exchange_requests[-1]
    assert form["client_id"] == auth.introspection_client[0] and form["audience"] == "github-mcp"


async def test_refused_exchange_is_401_audited_and_forwards_nothing(gateway, upstream, auth, workdir):
    url = gateway.url("/exchange-mcp")
    auth.refuse_exchange_for.add("mallory")
    upstream.reset()
    response = await post_initialize(url, auth.mint("mallory", aud=url))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert "resource_metadata=" in response.headers["www-authenticate"]
    assert response.json()["error_description"] == (
        "The access token could not be exchanged for the upstream (invalid_grant)")
    assert upstream.requests() == []
    refusal = audit_records(workdir, "identity.exchange.exchange_token")
    refusal = [r for r in refusal if "could not be exchanged" in (r.get("reason") or "")]
    assert refusal and refusal[-1]["decision"] == "deny" and refusal[-1]["http"]["upstream_status"] is None
    assert refusal[-1]["consumer"]["name"] == "mallory" and "invalid_grant" in refusal[-1]["reason"]
    assert refusal[-1]["token_exchange"] == {"error": "invalid_grant"}


async def test_unreachable_token_endpoint_is_502_and_forwards_nothing(gateway, upstream, auth):
    url = gateway.url("/down-mcp")
    upstream.reset()
    response = await post_initialize(url, auth.mint("frank", aud=url))
    assert response.status_code == 502
    assert response.json()["error"] == "bad_gateway"
    assert upstream.requests() == []


async def test_token_not_for_this_route_is_never_exchanged(gateway, upstream, auth):
    url = gateway.url("/exchange-mcp")
    before = auth.exchange_calls
    upstream.reset()
    for token in (auth.mint("alice", aud="https://elsewhere.example/mcp"), auth.mint("alice", aud=url, exp_in=-60),
                  auth.alg_none_token("alice", aud=url)):
        assert (await post_initialize(url, token)).status_code == 401
    assert auth.exchange_calls == before  # validated first: a bad token never reaches the token endpoint
    assert upstream.requests() == []


async def test_actor_token_from_header(gateway, upstream, auth):
    url = gateway.url("/actor-mcp")
    user_token, actor_token = auth.mint("grace", aud=url), auth.mint("agent-7", aud=auth.url)
    upstream.reset()
    missing = await post_initialize(url, user_token)
    assert missing.status_code == 401 and "X-Actor-Token" in missing.json()["error_description"]
    assert upstream.requests() == []
    response = await post_initialize(url, user_token, {"X-Actor-Token": actor_token})
    assert response.status_code == 200
    (exchanged,) = set(upstream_tokens(upstream))
    assert payload(exchanged)["sub"] == "grace" and payload(exchanged)["act"] == {"sub": "agent-7"}
    assert all("x-actor-token" not in r["headers"] for r in upstream.requests())
    assert auth.exchange_requests[-1]["actor_token"] == actor_token
    # a forged actor token: the authorization server refuses it, nothing forwarded
    upstream.reset()
    forged = await post_initialize(url, user_token, {"X-Actor-Token": auth.mint("agent-7", aud=auth.url, exp_in=-60)})
    assert forged.status_code == 401 and upstream.requests() == []


async def test_a_request_the_acl_denies_costs_no_exchange(gateway, upstream, auth):
    url = gateway.url("/acl-mcp")
    outsider = auth.mint("outsider", aud=url, extra={"team": "outsiders"})
    before = auth.exchange_calls
    upstream.reset()
    async with httpx.AsyncClient(timeout=10) as client:
        denied = await client.post(url, json=jsonrpc("tools/call", {"name": "search_repositories", "arguments": SEARCH}),
                                   headers=dict(MCP_HEADERS, Authorization=f"Bearer {outsider}"))
    assert "error" in denied.json() or denied.status_code == 403
    assert auth.exchange_calls == before and upstream.requests() == []  # decided first, exchanged only if allowed
    agent = auth.mint("agent", aud=url, extra={"team": "agents"})
    assert (await post_initialize(url, agent)).status_code == 200
    assert auth.exchange_calls - before == 1
    assert payload(upstream_tokens(upstream)[0])["sub"] == "agent"


async def test_claim_headers_come_from_the_callers_token_not_the_exchanged_one(gateway, auth):
    url = gateway.url("/claims-echo")
    user_token = auth.mint("heidi", aud=url, extra={"org": {"id": 42}})
    response = await post_initialize(url, user_token, {"X-Org-Id": "1", "x_token_client": "forged"})
    assert response.status_code == 200
    seen = response.json()
    exchanged = auth.exchanged_tokens[-1]  # this caller's: a new token is exchanged anew
    # the echo's copy is masked: the exchanged token is the gateway's own secret (integrity/own_secrets.py)
    assert seen["authorization"] == "Bearer " + "*" * len(exchanged) and exchanged != user_token
    assert "org" not in payload(exchanged) and payload(exchanged)["client_id"]  # what the exchanged token holds
    assert seen["x-org-id"] == "42"  # the caller's validated claim, the forgery gone
    assert "x-token-client" not in seen and "x_token_client" not in seen  # the caller's token has no client_id
