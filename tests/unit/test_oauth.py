"""The OAuth resource server phase (identity/oauth.py) against the real test authorization server:
JWT validation with its JWKS, introspection and its cache, the identity provider being down, and
the mapping of claims to consumers and groups."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mitmproxy import http
from mitmproxy.test import tflow
from pydantic import ValidationError

from mcpgw.context import FlowContext
from mcpgw.identity.consumers import Identity
from mcpgw.identity.oauth import authenticate
from mcpgw.policy.models import Policy
from mcpgw.policy.store import Snapshot
from mcpgw.routing import RouteTable
from tests.support.authserver import AuthServer, running_auth_server
from tests.support.gateway import free_port

GATEWAY_HOST = "gateway.test:8443"
RESOURCE = f"http://{GATEWAY_HOST}/mcp"
PRM_URL = f"http://{GATEWAY_HOST}/.well-known/oauth-protected-resource/mcp"
USERS = {
    "dev-user": {"groups": ["developer"]},
    "admin-user": {"groups": ["admin", "auditors"]},
    "u-123": {"groups": "admin, developer"},
    "stranger": {},
}


@pytest.fixture(scope="module")
def auth():
    with running_auth_server(users=USERS) as server:
        yield server


@pytest.fixture
def fresh_auth():
    """An authorization server of this test's own, for counting what reaches it."""
    with running_auth_server(users=USERS) as server:
        yield server


def jwks_route(auth: AuthServer, **oauth) -> dict:
    return {"authorization_servers": [auth.url], "jwks_endpoint": auth.jwks_url, "consumer_claim": ["sub"], **oauth}


def introspection_route(auth: AuthServer, **oauth) -> dict:
    client_id, secret = auth.introspection_client
    return {"authorization_servers": [auth.url], "introspection_endpoint": auth.introspection_url,
            "client_id": client_id, "client_secret": secret, "consumer_claim": ["sub"], **oauth}


def snapshot(oauth: dict, urls: list[str] | None = None) -> Snapshot:
    policy = Policy.model_validate({
        "gateway": {"urls": [f"http://{GATEWAY_HOST}"] if urls is None else urls},  # the route's resource: RESOURCE
        "consumer_groups": ["developer", "admin"],
        "consumers": {"dev-user": {"groups": ["developer"]}, "alice": {"custom_id": "u-123", "id": "c-1"}},
        "services": {"upstream": {"url": "http://127.0.0.1:9/mcp"}},
        "routes": {"mcp": {"service": "upstream", "paths": ["/mcp"], "oauth": oauth}},
    })
    return Snapshot(policy, RouteTable(policy), "test", 1, "test", ())


def request_flow(headers: dict[str, str] | list[tuple[str, str]] | None = None) -> http.HTTPFlow:
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    fields = [(name.encode(), value.encode()) for name, value in [("content-type", "application/json"), *pairs]]
    return tflow.tflow(req=http.Request.make("POST", RESOURCE, b"{}", http.Headers(fields)))


async def run(oauth: dict | Snapshot, token: str | None = None, headers=None) -> tuple[FlowContext, http.HTTPFlow, http.Response | None]:
    snap = oauth if isinstance(oauth, Snapshot) else snapshot(oauth)
    flow = request_flow(headers if headers is not None else {"authorization": f"Bearer {token}"} if token else {})
    ctx = FlowContext(snap, "gateway", snap.routes.match_gateway("/mcp"), frozenset(), GATEWAY_HOST, "http")
    return ctx, flow, await authenticate(ctx, flow)


def assert_refused(resp: http.Response | None, description: str, *, invalid_token: bool = True) -> None:
    assert resp is not None and resp.status_code == 401
    body = json.loads(resp.content)
    assert body["error"] == "unauthorized"
    assert description in body["error_description"]
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith(f'Bearer resource_metadata="{PRM_URL}"')
    assert ('error="invalid_token"' in challenge) is invalid_token


# -- JWT validation --------------------------------------------------------------------------------


async def test_valid_jwt_is_admitted_and_the_token_stripped(auth):
    ctx, flow, resp = await run(jwks_route(auth, consumer_claim=["sub"]), auth.mint(aud=RESOURCE))
    assert resp is None
    assert ctx.identity == Identity("dev-user", groups=("developer",), method="oauth")
    assert ctx.consumed_credentials == [("header", "authorization")]
    assert "authorization" not in flow.request.headers  # passthrough_credentials defaults to false, as in Kong


async def test_passthrough_credentials_keeps_the_token(auth):
    token = auth.mint(aud=RESOURCE)
    _, flow, resp = await run(jwks_route(auth, passthrough_credentials=True), token)
    assert resp is None
    assert flow.request.headers["authorization"] == f"Bearer {token}"


async def test_missing_token_gets_the_discovery_challenge(auth):
    _, _, resp = await run(jwks_route(auth))
    assert_refused(resp, "Missing access token", invalid_token=False)
    assert resp.headers["WWW-Authenticate"] == f'Bearer resource_metadata="{PRM_URL}"'
    assert json.loads(resp.content) == {"error": "unauthorized", "error_description": "Missing access token"}
    _, _, resp = await run(jwks_route(auth), headers={"authorization": "Basic dXNlcjpwYXNz"})
    assert_refused(resp, "Missing access token", invalid_token=False)


@pytest.mark.parametrize("headers, description", [
    ([("authorization", "Bearer a.b.c"), ("authorization", "Bearer d.e.f")], "exactly one Authorization header"),
    ({"authorization": "Bearer not a token"}, "malformed"),
    ({"authorization": "Bearer "}, "malformed"),
    ({"authorization": "Bearer abc"}, "not a well-formed JWT"),
])
async def test_malformed_authorization_is_refused(auth, headers, description):
    _, _, resp = await run(jwks_route(auth), headers=headers)
    assert_refused(resp, description)


def forged_tokens(auth: AuthServer) -> dict[str, tuple[str, str]]:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "expired": (auth.mint(aud=RESOURCE, exp_in=-60), "expired"),
        "not yet valid": (auth.mint(aud=RESOURCE, nbf_in=600), "not valid yet"),
        "wrong audience": (auth.mint(aud="http://gateway.test:8443/other"), "another audience"),
        "no audience": (auth.mint(aud=None), "no audience"),
        "wrong issuer": (auth.mint(aud=RESOURCE, iss="https://evil.example"), "unexpected issuer"),
        "bad signature": (auth.mint(aud=RESOURCE, key=other_key), "signature is invalid"),
        "alg none": (auth.alg_none_token(aud=RESOURCE), "algorithm is not accepted"),
        "HS256 keyed with the public key": (auth.hs256_with_public_key_token(aud=RESOURCE), "algorithm is not accepted"),
        "no exp": (auth.mint(aud=RESOURCE, extra={"exp": None}), "no exp claim"),
        "unknown kid": (auth.mint(aud=RESOURCE, kid="no-such-key"), "does not publish"),
    }


@pytest.mark.parametrize("case", ["expired", "not yet valid", "wrong audience", "no audience", "wrong issuer",
                                  "bad signature", "alg none", "HS256 keyed with the public key", "no exp",
                                  "unknown kid"])
async def test_invalid_jwts_are_refused(auth, case):
    token, description = forged_tokens(auth)[case]
    ctx, flow, resp = await run(jwks_route(auth), token)
    assert_refused(resp, description)
    assert ctx.identity is None and flow.request.headers["authorization"] == f"Bearer {token}"


async def test_leeway_and_relaxed_audience(auth):
    late = auth.mint(aud=RESOURCE, exp_in=-20)
    assert (await run(jwks_route(auth, jwt_claims_leeway=60), late))[2] is None
    foreign = auth.mint(aud="some-client-id")
    assert (await run(jwks_route(auth, insecure_relaxed_audience_validation=True), foreign))[2] is None
    custom = "https://mcp.example/api"
    assert (await run(jwks_route(auth, resource=custom), auth.mint(aud=custom)))[2] is None
    assert_refused((await run(jwks_route(auth, resource=custom), auth.mint(aud=RESOURCE)))[2], "another audience")


# -- the audience is the gateway's own, never the Host the client sends ----------------------------


async def run_at(oauth: dict, token: str, host: str, listener: tuple[str, int] = ("127.0.0.1", 8443),
                 urls: list[str] | None = None) -> http.Response | None:
    """authenticate() on a flow that came in on `listener` with `Host: host`."""
    snap = snapshot(oauth, urls)
    flow = request_flow({"authorization": f"Bearer {token}", "host": host})
    flow.client_conn.sockname = listener
    ctx = FlowContext(snap, "gateway", snap.routes.match_gateway("/mcp"), frozenset(), host, "http")
    return await authenticate(ctx, flow)


async def test_attack_token_for_another_resource_with_a_host_header_to_match(auth):
    """Issue 11 item 9: a token issued for another resource on this machine (its `aud` names
    localhost:9443) is sent with `Host: localhost:9443`; the gateway listens on 127.0.0.1:8443."""
    for host in ("localhost:9443", "LOCALHOST:9443"):
        resp = await run_at(jwks_route(auth), auth.mint(aud="http://localhost:9443/mcp"), host)
        assert_refused_at(resp, "another audience")
    # Nor does a Host make its own URL acceptable when the route names its resource.
    custom = "https://mcp.example/api"
    resp = await run_at(jwks_route(auth, resource=custom), auth.mint(aud=f"http://{GATEWAY_HOST}/mcp"), GATEWAY_HOST)
    assert_refused_at(resp, "another audience")


def assert_refused_at(resp: http.Response | None, description: str) -> None:
    assert resp is not None and resp.status_code == 401 and description in json.loads(resp.content)["error_description"]


async def test_tokens_for_the_gateway_urls_and_its_listener_are_accepted(auth):
    route = jwks_route(auth)
    for aud, host in ((RESOURCE, "localhost:9443"),  # the configured public URL, whatever the Host
                      ("http://127.0.0.1:8443/mcp", "127.0.0.1:8443"),  # the listener's own address
                      ("http://localhost:8443/mcp", "localhost:8443")):  # a loopback listener's name
        assert await run_at(route, auth.mint(aud=aud), host) is None, aud
    # Without gateway.urls, the listener's address is all there is; a dual-stack listener's IPv4 client too.
    assert await run_at(route, auth.mint(aud="http://127.0.0.1:8443/mcp"), "x", ("::ffff:127.0.0.1", 8443), urls=[]) is None
    assert await run_at(route, auth.mint(aud="http://[::1]:8443/mcp"), "x", ("::1", 8443, 0, 0), urls=[]) is None
    assert_refused_at(await run_at(route, auth.mint(aud=RESOURCE), GATEWAY_HOST, urls=[]), "another audience")


async def test_issuer_setting_and_algorithm_allow_list(auth):
    token = auth.mint(aud=RESOURCE, iss="https://idp.example/realms/x")
    assert (await run(jwks_route(auth, issuer="https://idp.example/realms/x"), token))[2] is None
    assert_refused((await run(jwks_route(auth, algorithms=["ES256"]), auth.mint(aud=RESOURCE)))[2],
                   "algorithm is not accepted")


async def test_es256_keys():
    with running_auth_server(signing_alg="ES256") as es_auth:
        assert (await run(jwks_route(es_auth), es_auth.mint(aud=RESOURCE)))[2] is None
        # An RS256 header naming the EC key: the key type decides, not the token.
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = es_auth.mint(aud=RESOURCE, alg="RS256", key=rsa_key)
        assert_refused((await run(jwks_route(es_auth), token))[2], "does not match")


async def test_unknown_kid_refreshes_the_jwks_once(fresh_auth):
    route = jwks_route(fresh_auth)
    assert (await run(route, fresh_auth.mint(aud=RESOURCE)))[2] is None
    assert fresh_auth.jwks_calls == 1
    assert (await run(route, fresh_auth.mint(aud=RESOURCE)))[2] is None
    assert fresh_auth.jwks_calls == 1  # cached
    assert_refused((await run(route, fresh_auth.mint(aud=RESOURCE, kid="forged-1")))[2], "does not publish")
    assert fresh_auth.jwks_calls == 2
    for n in range(5):  # more unknown kids soon after: no more fetches
        assert_refused((await run(route, fresh_auth.mint(aud=RESOURCE, kid=f"forged-{n + 2}")))[2], "does not publish")
    assert fresh_auth.jwks_calls == 2


async def test_key_rotation_is_picked_up(fresh_auth):
    route = jwks_route(fresh_auth)
    assert (await run(route, fresh_auth.mint(aud=RESOURCE)))[2] is None
    old = fresh_auth.mint(aud=RESOURCE)
    fresh_auth.rotate_key()
    assert (await run(route, fresh_auth.mint(aud=RESOURCE)))[2] is None
    assert fresh_auth.jwks_calls == 2
    assert_refused((await run(route, old))[2], "does not publish")


async def test_concurrent_validations_share_one_jwks_fetch(fresh_auth):
    snap = snapshot(jwks_route(fresh_auth))
    results = await asyncio.gather(*(run(snap, fresh_auth.mint(aud=RESOURCE)) for _ in range(8)))
    assert all(resp is None for _, _, resp in results)
    assert fresh_auth.jwks_calls == 1


async def test_unreachable_jwks_endpoint_is_503_never_acceptance(auth):
    dead = f"http://127.0.0.1:{free_port()}/jwks"
    route = {"authorization_servers": [auth.url], "jwks_endpoint": dead, "timeout": 2}
    for _ in range(2):  # the second one is refused from the remembered failure
        ctx, flow, resp = await run(route, auth.mint(aud=RESOURCE))
        assert resp is not None and resp.status_code == 503
        assert json.loads(resp.content)["error"] == "temporarily_unavailable"
        assert resp.headers["Retry-After"]
        assert ctx.identity is None


async def test_jwks_endpoint_answering_an_error_is_503(auth):
    route = {"authorization_servers": [auth.url], "jwks_endpoint": auth.url + "/no-such-jwks"}
    assert (await run(route, auth.mint(aud=RESOURCE)))[2].status_code == 503


# -- introspection ---------------------------------------------------------------------------------


async def test_introspection_admits_active_tokens_and_caches_the_answer(fresh_auth):
    snap = snapshot(introspection_route(fresh_auth))
    token = fresh_auth.mint_opaque(aud=RESOURCE)
    for _ in range(5):
        ctx, flow, resp = await run(snap, token)
        assert resp is None
        assert ctx.identity == Identity("dev-user", groups=("developer",), method="oauth")
    assert fresh_auth.introspection_calls == 1


async def test_concurrent_requests_share_one_introspection(fresh_auth):
    snap = snapshot(introspection_route(fresh_auth))
    token = fresh_auth.mint_opaque(aud=RESOURCE)
    results = await asyncio.gather(*(run(snap, token) for _ in range(6)))
    assert all(resp is None for _, _, resp in results)
    assert fresh_auth.introspection_calls == 1


async def test_inactive_tokens_are_refused_and_cached_briefly(fresh_auth):
    snap = snapshot(introspection_route(fresh_auth, introspection_negative_cache_ttl=0.5))
    token = fresh_auth.mint_opaque(aud=RESOURCE, active=False)
    for _ in range(3):
        assert_refused((await run(snap, token))[2], "not active")
    assert fresh_auth.introspection_calls == 1
    await asyncio.sleep(0.6)
    assert_refused((await run(snap, token))[2], "not active")
    assert fresh_auth.introspection_calls == 2


async def test_cached_answer_expires_with_the_token(fresh_auth):
    snap = snapshot(introspection_route(fresh_auth))
    # exp is whole seconds: 2 s leaves at least one second for the first answer on a slow machine
    token = fresh_auth.mint_opaque(aud=RESOURCE, exp_in=2)
    assert (await run(snap, token))[2] is None
    await asyncio.sleep(fresh_auth.opaque_expiry(token) - time.time() + 0.1)
    assert_refused((await run(snap, token))[2], "not active")  # asked again: the cache stopped at exp
    assert fresh_auth.introspection_calls == 2


async def test_revocation_is_seen_once_the_cache_entry_ends(fresh_auth):
    snap = snapshot(introspection_route(fresh_auth, introspection_cache_ttl=0.3))
    token = fresh_auth.mint_opaque(aud=RESOURCE)
    assert (await run(snap, token))[2] is None
    fresh_auth.revoke(token)
    assert (await run(snap, token))[2] is None  # still cached
    await asyncio.sleep(0.4)
    assert_refused((await run(snap, token))[2], "not active")


async def test_cache_can_be_disabled(fresh_auth):
    snap = snapshot(introspection_route(fresh_auth, cache_introspection=False))
    token = fresh_auth.mint_opaque(aud=RESOURCE)
    for _ in range(3):
        assert (await run(snap, token))[2] is None
    assert fresh_auth.introspection_calls == 3


async def test_client_secret_post_and_audience_of_introspected_tokens(auth):
    route = introspection_route(auth, client_auth="client_secret_post")
    assert (await run(route, auth.mint_opaque(aud=[RESOURCE, "other"])))[2] is None
    assert_refused((await run(route, auth.mint_opaque(aud="other")))[2], "another audience")
    assert_refused((await run(route, auth.mint_opaque(aud=None)))[2], "no audience")
    relaxed = introspection_route(auth, insecure_relaxed_audience_validation=True)
    assert (await run(relaxed, auth.mint_opaque(aud=None)))[2] is None


async def test_introspected_issuer_is_checked_when_configured(auth):
    token = auth.mint_opaque(aud=RESOURCE)
    assert (await run(introspection_route(auth, issuer=auth.url), token))[2] is None
    assert_refused((await run(introspection_route(auth, issuer="https://other.example"), token))[2],
                   "unexpected issuer")


async def test_introspection_failures_are_503(auth):
    token = auth.mint_opaque(aud=RESOURCE)
    bad_secret = introspection_route(auth, client_secret="wrong")
    unreachable = introspection_route(auth, introspection_endpoint=f"http://127.0.0.1:{free_port()}/introspect")
    for route in (bad_secret, unreachable):
        ctx, _, resp = await run(route, token)
        assert resp is not None and resp.status_code == 503
        assert ctx.identity is None


async def test_cached_tokens_survive_the_identity_provider_going_down_new_ones_do_not():
    server = AuthServer(users=USERS)
    server.start()
    try:
        snap = snapshot(introspection_route(server))
        known = server.mint_opaque(aud=RESOURCE)
        new = server.mint_opaque(aud=RESOURCE)
        assert (await run(snap, known))[2] is None
    finally:
        server.stop()
    assert (await run(snap, known))[2] is None
    resp = (await run(snap, new))[2]
    assert resp is not None and resp.status_code == 503


# -- claims to consumers and groups ----------------------------------------------------------------


@pytest.mark.parametrize("sub, oauth, expected", [
    # consumer_by defaults to [custom_id, username], Kong's default
    ("dev-user", {}, Identity("dev-user", groups=("developer",), method="oauth")),
    ("u-123", {}, Identity("alice", "c-1", "u-123", method="oauth")),
    ("c-1", {"consumer_by": ["id"]}, Identity("alice", "c-1", "u-123", method="oauth")),
    # groups from the claim (list or string) join the consumer's own; undeclared names are dropped
    ("admin-user", {"consumer_optional": True, "consumer_groups_claim": ["groups"]},
     Identity("admin-user", groups=("admin",), method="oauth")),
    ("u-123", {"consumer_groups_claim": ["groups"]},
     Identity("alice", "c-1", "u-123", ("admin", "developer"), "oauth")),
    ("dev-user", {"consumer_groups_claim": ["groups"]}, Identity("dev-user", groups=("developer",), method="oauth")),
    ("stranger", {"consumer_optional": True}, Identity("stranger", method="oauth")),
])
async def test_consumer_mapping(auth, sub, oauth, expected):
    ctx, _, resp = await run(jwks_route(auth, **oauth), auth.mint(sub, aud=RESOURCE))
    assert resp is None
    assert ctx.identity == expected


async def test_nested_claim_paths(auth):
    token = auth.mint("stranger", aud=RESOURCE, extra={"realm_access": {"user": "u-123", "roles": ["admin"]}})
    route = jwks_route(auth, consumer_claim=["realm_access", "user"], consumer_groups_claim=["realm_access", "roles"])
    ctx, _, resp = await run(route, token)
    assert resp is None and ctx.identity == Identity("alice", "c-1", "u-123", ("admin",), "oauth")


@pytest.mark.parametrize("sub, oauth, description", [
    ("stranger", {}, "does not map to a consumer"),
    ("dev-user", {"consumer_claim": ["email"]}, "does not map to a consumer"),
    ("stranger", {"consumer_optional": True, "consumer_groups_claim": ["groups"]},
     "no known consumer group"),
    # unmapped, and its subject is a consumer's name: it must not borrow that consumer's ACL entries
    ("dev-user", {"consumer_by": ["custom_id"], "consumer_optional": True}, "collides"),
    ("dev-user", {"consumer_claim": None}, "collides"),
    ("stranger", {"consumer_optional": True, "credential_claim": ["email"]}, "no email claim"),
])
async def test_failed_mappings_are_401(auth, sub, oauth, description):
    assert_refused((await run(jwks_route(auth, **oauth), auth.mint(sub, aud=RESOURCE)))[2], description)


async def test_optional_groups_claim(auth):
    route = jwks_route(auth, consumer_groups_claim=["groups"], consumer_groups_optional=True)
    ctx, _, resp = await run(route, auth.mint("u-123", aud=RESOURCE, extra={"groups": None}))
    assert resp is None and ctx.identity == Identity("alice", "c-1", "u-123", method="oauth")


# -- settings --------------------------------------------------------------------------------------


@pytest.mark.parametrize("oauth, message", [
    ({"authorization_servers": ["https://as"], "discover_introspection": True}, "needs client_id"),
    ({"authorization_servers": ["https://as"], "jwks_endpoint": "https://as/jwks", "discover_introspection": True},
     "neither jwks_endpoint nor introspection_endpoint"),
    ({"authorization_servers": ["https://as"], "client_id": "c"}, "only with introspection"),
    ({"authorization_servers": ["https://as"], "jwks_endpoint": "https://as/jwks",
      "introspection_endpoint": "https://as/i", "client_id": "c", "client_secret": "s"}, "not both"),
    ({"authorization_servers": ["https://as"], "introspection_endpoint": "https://as/i"}, "needs client_id"),
    ({"authorization_servers": ["https://as"], "jwks_endpoint": "https://as/jwks", "client_id": "c"}, "only with introspection"),
    ({"authorization_servers": ["https://as"], "jwks_endpoint": "https://as/jwks", "algorithms": ["HS256"]}, "HS256 is refused"),
    ({"authorization_servers": ["https://as"], "jwks_endpoint": "https://as/jwks", "algorithms": ["none"]}, "none is refused"),
    ({"authorization_servers": ["https://as"], "jwks_endpoint": "https://as/jwks", "algorithms": ["RS1"]}, "unsupported"),
    ({"authorization_servers": ["https://as"], "jwks_endpoint": "https://as/jwks", "timeout": 10000}, "in seconds"),
    ({"authorization_servers": ["as.example"], "jwks_endpoint": "https://as/jwks"}, r"absolute http\(s\) URL"),
    ({"authorization_servers": [], "jwks_endpoint": "https://as/jwks"}, "at least 1"),
    ({"authorization_servers": ["https://as"], "jwks_endpoint": "https://as/jwks", "consumer_claim": []}, "at least 1"),
    ({"authorization_servers": ["https://as"], "jwks_endpoint": "https://as/jwks", "consumer_by": ["email"]}, "username"),
    ({"authorization_servers": ["https://as"], "jwks_endpoint": "https://as/jwks", "scopes": ["x"]}, "Extra inputs"),
])
def test_invalid_settings_are_refused_at_load(oauth, message):
    with pytest.raises(ValidationError, match=message):
        snapshot(oauth)


def test_kong_recipe_settings_load_and_the_secret_stays_hidden():
    snap = snapshot({
        "resource": "https://localhost:8443/konnect-mcp",
        "authorization_servers": ["https://idp.example/realms/demo"],
        "introspection_endpoint": "https://idp.example/realms/demo/introspect",
        "client_id": "kong", "client_secret": "very-secret-value",
        "metadata_endpoint": "/.well-known/oauth-protected-resource/konnect-mcp",
        "scopes_supported": ["openid"], "insecure_relaxed_audience_validation": True, "ssl_verify": True,
        "cache_introspection": True, "passthrough_credentials": False,
        "consumer_claim": ["sub"], "consumer_by": ["username", "custom_id"], "consumer_optional": True,
        "consumer_groups_claim": ["groups"], "consumer_groups_optional": True, "credential_claim": ["sub"],
    })
    oauth = snap.policy.routes["mcp"].oauth
    assert oauth.client_secret.reveal() == "very-secret-value"
    assert "very-secret-value" not in repr(snap.policy) and "very-secret-value" not in str(snap.policy.model_dump())


async def test_routes_without_oauth_are_untouched():
    policy = Policy.model_validate({"services": {"u": {"url": "http://127.0.0.1:9/mcp"}},
                                    "routes": {"mcp": {"service": "u", "paths": ["/mcp"]}}})
    snap = Snapshot(policy, RouteTable(policy), "test", 1, "test", ())
    ctx, flow, resp = await run(snap, headers={"authorization": "Bearer x"})
    assert resp is None and ctx.identity is None and flow.request.headers["authorization"] == "Bearer x"

