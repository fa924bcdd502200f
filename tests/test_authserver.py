"""The test authorization server is a real one: metadata, registration, authorization code with
PKCE, signed tokens that verify against its JWKS, introspection, and the forged tokens it offers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.oauth_client import oauth_provider
from tests.support.authserver import AuthServer, running_auth_server
from tests.support.threaded_server import ThreadedServer

REDIRECT_URI = "http://127.0.0.1:9/callback"
RESOURCE = "http://127.0.0.1:8080/mcp"


@pytest.fixture
def auth():
    with running_auth_server() as server:
        yield server


@pytest.fixture
def http():
    with httpx.Client(timeout=10) as client:
        yield client


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def register(http: httpx.Client, auth: AuthServer, **metadata) -> dict:
    # A public client asking for the grants the MCP SDK asks for.
    body = {
        "redirect_uris": [REDIRECT_URI],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        **metadata,
    }
    response = http.post(auth.registration_url, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def authorize(http: httpx.Client, auth: AuthServer, client_id: str, challenge: str | None, **params) -> dict:
    """Run /authorize and return the parameters of the redirect back to the client."""
    query = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "state": "xyz"}
    if challenge is not None:
        query |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    response = http.get(auth.authorization_url, params={**query, **params})
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    return {name: values[0] for name, values in parse_qs(location.query).items()}


def redeem(http: httpx.Client, auth: AuthServer, client_id: str, code: str, verifier: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "client_id": client_id,
        "code_verifier": verifier,
    }
    return http.post(auth.token_url, data=form)


def login(http: httpx.Client, auth: AuthServer, **authorize_params) -> dict:
    """A whole authorization-code flow for a fresh public client; returns the token response."""
    client_id = register(http, auth)["client_id"]
    verifier, challenge = pkce_pair()
    code = authorize(http, auth, client_id, challenge, **authorize_params)["code"]
    response = redeem(http, auth, client_id, code, verifier)
    assert response.status_code == 200, response.text
    return response.json() | {"client_id": client_id}


def introspect(http: httpx.Client, auth: AuthServer, token: str) -> dict:
    response = http.post(auth.introspection_url, data={"token": token}, auth=auth.introspection_client)
    assert response.status_code == 200, response.text
    return response.json()


def verify_with_jwks(auth: AuthServer, token: str, audience: str) -> dict:
    signing_key = jwt.PyJWKClient(auth.jwks_url).get_signing_key_from_jwt(token)
    return jwt.decode(token, signing_key, algorithms=["RS256", "ES256"], audience=audience, issuer=auth.url)


def decode_segment(segment: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


# -- discovery and registration ----------------------------------------------------------------


def test_metadata_documents(auth, http):
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        metadata = http.get(auth.url + path).json()
        assert metadata["issuer"] == auth.url
        assert metadata["authorization_endpoint"] == auth.authorization_url
        assert metadata["token_endpoint"] == auth.token_url
        assert metadata["jwks_uri"] == auth.jwks_url
        assert metadata["introspection_endpoint"] == auth.introspection_url
        assert metadata["registration_endpoint"] == auth.registration_url
        assert metadata["response_types_supported"] == ["code"]
        assert metadata["code_challenge_methods_supported"] == ["S256"]
        assert set(metadata["grant_types_supported"]) == {"authorization_code", "refresh_token", "client_credentials"}
        assert set(metadata["token_endpoint_auth_methods_supported"]) == {
            "none", "client_secret_basic", "client_secret_post"
        }


def test_issuer_path_metadata_locations():
    with running_auth_server(issuer_path="/realms/demo") as auth, httpx.Client() as http:
        origin = auth.url.removesuffix("/realms/demo")
        assert auth.url.endswith(":%d/realms/demo" % urlsplit(auth.url).port)
        assert auth.token_url == auth.url + "/token"
        for url in (
            origin + "/.well-known/oauth-authorization-server/realms/demo",  # RFC 8414 path insertion
            origin + "/.well-known/openid-configuration/realms/demo",
            auth.url + "/.well-known/openid-configuration",  # OpenID Connect Discovery
            origin + "/.well-known/oauth-authorization-server",
        ):
            response = http.get(url)
            assert response.status_code == 200, url
            assert response.json()["issuer"] == auth.url
        tokens = login(http, auth, resource=RESOURCE)
        assert verify_with_jwks(auth, tokens["access_token"], RESOURCE)["iss"] == auth.url


def test_dynamic_client_registration(auth, http):
    public = register(http, auth, client_name="agent", scope="openid")
    assert public["client_id"] and "client_secret" not in public
    assert public["redirect_uris"] == [REDIRECT_URI]
    assert public["client_name"] == "agent" and public["token_endpoint_auth_method"] == "none"

    # RFC 7591: without token_endpoint_auth_method the client is confidential (client_secret_basic).
    response = http.post(auth.registration_url, json={"redirect_uris": [REDIRECT_URI]})
    confidential = response.json()
    assert response.status_code == 201
    assert confidential["client_secret"] and confidential["token_endpoint_auth_method"] == "client_secret_basic"
    assert confidential["client_id"] != public["client_id"]

    for body, error in [
        ({"redirect_uris": ["/relative"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["http://x/cb#frag"]}, "invalid_redirect_uri"),
        ({"grant_types": ["authorization_code"]}, "invalid_redirect_uri"),
        ({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "mtls"}, "invalid_client_metadata"),
        ({"redirect_uris": [REDIRECT_URI], "grant_types": ["password"]}, "invalid_client_metadata"),
    ]:
        response = http.post(auth.registration_url, json=body)
        assert response.status_code == 400 and response.json()["error"] == error, body


# -- authorization code with PKCE ----------------------------------------------------------------


def test_authorization_code_flow_issues_verifiable_jwt(auth, http):
    client_id = register(http, auth)["client_id"]
    verifier, challenge = pkce_pair()
    redirect = authorize(http, auth, client_id, challenge, scope="openid mcp", resource=RESOURCE)
    assert redirect["state"] == "xyz" and redirect["iss"] == auth.url

    response = redeem(http, auth, client_id, redirect["code"], verifier)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    tokens = response.json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 300
    assert tokens["scope"] == "openid mcp" and tokens["refresh_token"]

    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["alg"] == "RS256" and header["kid"] == auth.kid
    claims = verify_with_jwks(auth, tokens["access_token"], RESOURCE)
    assert claims["aud"] == RESOURCE  # RFC 8707: audience is the requested resource
    assert claims["sub"] == "dev-user" and claims["groups"] == ["developer"]
    assert claims["client_id"] == client_id and claims["scope"] == "openid mcp"
    assert {"exp", "iat", "nbf", "jti"} <= claims.keys()
    assert auth.jwks_calls == 1


def test_audience_defaults_to_client_id_and_default_user_is_settable(auth, http):
    auth.default_user = "admin-user"
    tokens = login(http, auth)
    claims = verify_with_jwks(auth, tokens["access_token"], tokens["client_id"])
    assert claims["sub"] == "admin-user" and claims["groups"] == ["admin"]


def test_wrong_verifier_is_refused_and_burns_the_code(auth, http):
    client_id = register(http, auth)["client_id"]
    verifier, challenge = pkce_pair()
    code = authorize(http, auth, client_id, challenge)["code"]
    response = redeem(http, auth, client_id, code, pkce_pair()[0])
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert redeem(http, auth, client_id, code, verifier).status_code == 400


def test_code_is_single_use_and_replay_revokes_its_tokens(auth, http):
    client_id = register(http, auth)["client_id"]
    verifier, challenge = pkce_pair()
    code = authorize(http, auth, client_id, challenge)["code"]
    first = redeem(http, auth, client_id, code, verifier)
    assert first.status_code == 200
    assert introspect(http, auth, first.json()["access_token"])["active"] is True

    replay = redeem(http, auth, client_id, code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert introspect(http, auth, first.json()["access_token"]) == {"active": False}


def test_code_is_bound_to_client_and_redirect_uri(auth, http):
    client_id = register(http, auth)["client_id"]
    other_id = register(http, auth)["client_id"]
    for redeem_as, redirect_uri in [(other_id, REDIRECT_URI), (client_id, "http://127.0.0.1:9/other")]:
        verifier, challenge = pkce_pair()
        code = authorize(http, auth, client_id, challenge)["code"]
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "client_id": redeem_as, "code_verifier": verifier}
        response = http.post(auth.token_url, data=form)
        assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_authorize_errors(auth, http):
    client_id = register(http, auth)["client_id"]
    _, challenge = pkce_pair()
    # Without a trustworthy redirect_uri the error is shown, never redirected.
    base = {"response_type": "code", "code_challenge": challenge, "code_challenge_method": "S256"}
    for params in [
        {"client_id": "nobody", "redirect_uri": REDIRECT_URI},
        {"client_id": client_id, "redirect_uri": "http://evil.example/cb"},
    ]:
        response = http.get(auth.authorization_url, params=base | params)
        assert response.status_code == 400 and response.json()["error"] == "invalid_request"

    assert authorize(http, auth, client_id, None)["error"] == "invalid_request"  # PKCE is mandatory
    plain = authorize(http, auth, client_id, None, code_challenge="x" * 43, code_challenge_method="plain")
    assert plain["error"] == "invalid_request" and plain["state"] == "xyz"
    assert authorize(http, auth, client_id, challenge, response_type="token")["error"] == "unsupported_response_type"
    assert authorize(http, auth, client_id, challenge, resource="not-a-uri")["error"] == "invalid_target"
    auth.default_user = "nobody"
    assert authorize(http, auth, client_id, challenge)["error"] == "access_denied"


def test_confidential_client_authenticates_at_token_endpoint(auth, http):
    client = http.post(auth.registration_url, json={"redirect_uris": [REDIRECT_URI]}).json()
    verifier, challenge = pkce_pair()
    code = authorize(http, auth, client["client_id"], challenge)["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier}
    refused = http.post(auth.token_url, data=form, auth=(client["client_id"], "wrong"))
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"

    code = authorize(http, auth, client["client_id"], challenge)["code"]
    credentials = (client["client_id"], client["client_secret"])
    accepted = http.post(auth.token_url, data=form | {"code": code}, auth=credentials)
    assert accepted.status_code == 200, accepted.text
    # Registered without grant_types, the client has only authorization_code (RFC 7591 default).
    assert "refresh_token" not in accepted.json()


def test_refresh_token_rotates(auth, http):
    tokens = login(http, auth, resource=RESOURCE)
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": tokens["client_id"]}
    refreshed = http.post(auth.token_url, data=form)
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["refresh_token"] != tokens["refresh_token"]
    assert verify_with_jwks(auth, refreshed.json()["access_token"], RESOURCE)["sub"] == "dev-user"
    assert http.post(auth.token_url, data=form).json()["error"] == "invalid_grant"  # the old one is spent


def test_client_credentials_grant(auth, http):
    form = {"grant_type": "client_credentials", "resource": RESOURCE}
    response = http.post(auth.token_url, data=form, auth=auth.introspection_client)
    assert response.status_code == 200, response.text
    assert "refresh_token" not in response.json()
    claims = verify_with_jwks(auth, response.json()["access_token"], RESOURCE)
    assert claims["sub"] == claims["client_id"] == auth.introspection_client[0]

    public_id = register(http, auth, grant_types=["authorization_code", "client_credentials"])["client_id"]
    refused = http.post(auth.token_url, data=form | {"client_id": public_id})
    assert refused.json()["error"] == "unauthorized_client"


# -- introspection ---------------------------------------------------------------------------------


def test_introspection_with_basic_and_post_client_auth(auth, http):
    token = auth.mint(aud=RESOURCE, scope="openid mcp")
    client_id, secret = auth.introspection_client
    by_basic = http.post(auth.introspection_url, data={"token": token}, auth=(client_id, secret))
    by_post = http.post(
        auth.introspection_url, data={"token": token, "client_id": client_id, "client_secret": secret}
    )
    for response in (by_basic, by_post):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["active"] is True and body["sub"] == body["username"] == "dev-user"
        assert body["aud"] == RESOURCE and body["iss"] == auth.url and body["scope"] == "openid mcp"
        assert body["groups"] == ["developer"] and body["token_type"] == "Bearer"
        assert body["exp"] > body["iat"]
    assert auth.introspection_calls == 2


def test_introspection_refuses_bad_client_auth(auth, http):
    token = auth.mint(aud=RESOURCE)
    client_id, secret = auth.introspection_client
    public_id = register(http, auth)["client_id"]
    attempts = [
        {"auth": (client_id, "wrong")},
        {"auth": ("unknown", secret)},
        {},
        {"data": {"client_id": public_id}},  # public clients may not introspect
        {"headers": {"Authorization": f"Bearer {token}"}},
        {"auth": (client_id, secret), "data": {"client_id": client_id, "client_secret": secret}},  # two methods
    ]
    for attempt in attempts:
        data = {"token": token, **attempt.pop("data", {})}
        response = http.post(auth.introspection_url, data=data, **attempt)
        assert response.status_code == 401, attempt
        assert response.json()["error"] == "invalid_client"
        assert response.headers["www-authenticate"].startswith("Basic")


def test_introspection_reports_bad_tokens_inactive(auth, http):
    stranger_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad_tokens = {
        "expired": auth.mint(aud=RESOURCE, exp_in=-60),
        "not yet valid": auth.mint(aud=RESOURCE, nbf_in=600),
        "foreign issuer": auth.mint(aud=RESOURCE, iss="https://elsewhere.example"),
        "unknown kid": auth.mint(aud=RESOURCE, kid="no-such-key"),
        "bad signature": auth.mint(aud=RESOURCE, key=stranger_key),
        "alg none": auth.alg_none_token(aud=RESOURCE),
        "hs256 confusion": auth.hs256_with_public_key_token(aud=RESOURCE),
        "unknown opaque": "not-a-token",
    }
    for reason, token in bad_tokens.items():
        assert introspect(http, auth, token) == {"active": False}, reason


def test_opaque_token_format(http):
    with running_auth_server(token_format="opaque") as auth:
        tokens = login(http, auth, resource=RESOURCE)
        with pytest.raises(jwt.DecodeError):
            jwt.get_unverified_header(tokens["access_token"])
        body = introspect(http, auth, tokens["access_token"])
        assert body["active"] is True and body["aud"] == RESOURCE
        assert body["client_id"] == tokens["client_id"] and body["groups"] == ["developer"]


def test_mint_opaque_and_revoke(auth, http):
    token = auth.mint_opaque("admin-user", aud=RESOURCE, scope="mcp")
    body = introspect(http, auth, token)
    assert body["active"] is True and body["sub"] == "admin-user" and body["groups"] == ["admin"]
    assert body["scope"] == "mcp" and body["aud"] == RESOURCE
    assert introspect(http, auth, auth.mint_opaque(active=False)) == {"active": False}
    assert introspect(http, auth, auth.mint_opaque(exp_in=-1)) == {"active": False}

    auth.revoke(token)
    assert introspect(http, auth, token) == {"active": False}
    signed = auth.mint(aud=RESOURCE)
    auth.revoke(signed)
    assert introspect(http, auth, signed) == {"active": False}
    assert verify_with_jwks(auth, signed, RESOURCE)["sub"] == "dev-user"  # still verifies offline


# -- keys and negative tokens ----------------------------------------------------------------------


def test_rotate_key_replaces_the_published_key(auth, http):
    old_kid = auth.kid
    old_token = auth.mint(aud=RESOURCE)
    assert [key["kid"] for key in http.get(auth.jwks_url).json()["keys"]] == [old_kid]

    new_kid = auth.rotate_key()
    assert new_kid != old_kid and auth.kid == new_kid
    jwks = http.get(auth.jwks_url).json()
    assert [key["kid"] for key in jwks["keys"]] == [new_kid]
    assert jwks["keys"][0]["kty"] == "RSA" and jwks["keys"][0]["use"] == "sig"
    assert auth.jwks_calls == 2
    assert introspect(http, auth, old_token) == {"active": False}
    with pytest.raises(jwt.PyJWKClientError):
        verify_with_jwks(auth, old_token, RESOURCE)
    assert verify_with_jwks(auth, auth.mint(aud=RESOURCE), RESOURCE)["sub"] == "dev-user"


def test_negative_mints_fail_verification_for_the_right_reason(auth):
    public_key = jwt.PyJWKClient(auth.jwks_url).get_signing_key(auth.kid).key

    def decode(token: str) -> dict:
        return jwt.decode(token, public_key, algorithms=["RS256"], audience=RESOURCE, issuer=auth.url)

    assert decode(auth.mint(aud=[RESOURCE, "other"], groups=["ops"]))["groups"] == ["ops"]
    with pytest.raises(jwt.ExpiredSignatureError):
        decode(auth.mint(aud=RESOURCE, exp_in=-60))
    with pytest.raises(jwt.ImmatureSignatureError):
        decode(auth.mint(aud=RESOURCE, nbf_in=600))
    with pytest.raises(jwt.InvalidAudienceError):
        decode(auth.mint(aud="https://someone-else.example"))
    with pytest.raises(jwt.InvalidIssuerError):
        decode(auth.mint(aud=RESOURCE, iss="https://elsewhere.example"))
    with pytest.raises(jwt.MissingRequiredClaimError):
        jwt.decode(auth.mint(aud=RESOURCE, extra={"exp": None}), public_key, algorithms=["RS256"],
                   audience=RESOURCE, options={"require": ["exp"]})
    stranger_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(jwt.InvalidSignatureError):
        decode(auth.mint(aud=RESOURCE, key=stranger_key))
    token = auth.mint(aud=RESOURCE, headers={"typ": "JWT", "x-test": "1"}, extra={"email": "dev@example.com"})
    assert jwt.get_unverified_header(token)["x-test"] == "1" and decode(token)["email"] == "dev@example.com"


def test_es256_signing():
    with running_auth_server(signing_alg="ES256") as auth:
        assert auth.jwks()["keys"][0]["kty"] == "EC"
        token = auth.mint(aud=RESOURCE)
        assert jwt.get_unverified_header(token)["alg"] == "ES256"
        assert verify_with_jwks(auth, token, RESOURCE)["sub"] == "dev-user"


def test_forged_tokens_are_what_they_claim_to_be(auth):
    header_b64, payload_b64, signature = auth.alg_none_token(aud=RESOURCE).split(".")
    assert decode_segment(header_b64)["alg"] == "none" and signature == ""
    assert decode_segment(payload_b64)["aud"] == RESOURCE and decode_segment(payload_b64)["iss"] == auth.url

    forged = auth.hs256_with_public_key_token(aud=RESOURCE)
    header_b64, payload_b64, signature = forged.split(".")
    assert decode_segment(header_b64) == {"alg": "HS256", "typ": "JWT", "kid": auth.kid}
    expected = hmac.new(auth.public_key_pem, f"{header_b64}.{payload_b64}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "=") == expected
    assert auth.public_key_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    # A verifier that pins the algorithm refuses both.
    public_key = jwt.PyJWKClient(auth.jwks_url).get_signing_key(auth.kid).key
    for token in (forged, auth.alg_none_token(aud=RESOURCE)):
        with pytest.raises(jwt.InvalidAlgorithmError):
            jwt.decode(token, public_key, algorithms=["RS256"], audience=RESOURCE)


# -- the official MCP client against this server ---------------------------------------------------


def protected_resource(auth: AuthServer) -> Starlette:
    """A minimal RFC 9728 resource at /mcp that trusts `auth` and checks tokens against its JWKS."""
    jwks = jwt.PyJWKClient(auth.jwks_url)

    def metadata_url(request: Request) -> str:
        return str(request.base_url).rstrip("/") + "/.well-known/oauth-protected-resource/mcp"

    def resource_url(request: Request) -> str:
        return str(request.base_url).rstrip("/") + "/mcp"

    def metadata(request: Request) -> JSONResponse:
        return JSONResponse({"resource": resource_url(request), "authorization_servers": [auth.url]})

    def mcp(request: Request) -> JSONResponse:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise jwt.InvalidTokenError("no bearer token")
            key = jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key, algorithms=["RS256"], audience=resource_url(request), issuer=auth.url)
        except jwt.PyJWTError:
            challenge = f'Bearer resource_metadata="{metadata_url(request)}"'
            return JSONResponse({"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": challenge})
        return JSONResponse({"sub": claims["sub"], "groups": claims["groups"], "aud": claims["aud"]})

    return Starlette(
        routes=[
            Route("/.well-known/oauth-protected-resource/mcp", metadata),
            Route("/mcp", mcp, methods=["GET", "POST"]),
        ]
    )




@pytest.mark.parametrize("issuer_path", ["", "/realms/demo"])
async def test_mcp_sdk_oauth_client_provider_completes_the_flow(issuer_path):
    with running_auth_server(issuer_path=issuer_path) as auth:
        resource_server = ThreadedServer(protected_resource(auth))
        resource_server.start()
        try:
            server_url = resource_server.base_url + "/mcp"
            provider, storage = oauth_provider(server_url, client_name="sdk-test")
            async with httpx.AsyncClient(auth=provider, timeout=10) as client:
                first = await client.post(server_url, json={})
                second = await client.post(server_url, json={})
        finally:
            resource_server.stop()

    assert first.status_code == 200, first.text
    assert first.json() == {"sub": "dev-user", "groups": ["developer"], "aud": server_url}
    assert second.status_code == 200
    assert storage.client_info is not None and storage.client_info.client_secret
    assert storage.client_info.token_endpoint_auth_method == "client_secret_basic"  # RFC 7591 default
    assert storage.tokens is not None and storage.tokens.refresh_token
    assert storage.redirect["iss"] == auth.url
