"""A small but real OAuth 2.1 authorization server for the test suite.

It issues signed JWT access tokens (RS256 by default, ES256 on request) or opaque ones, publishes
its JWKS, answers RFC 7662 introspection and RFC 7591 dynamic client registration, and runs the
authorization-code + PKCE flow the MCP client performs. There is no login page: `/authorize`
approves at once as `default_user`. Beside the HTTP endpoints, `AuthServer` has helpers that mint
tokens directly, including the broken and forged ones that negative tests need.

    with running_auth_server(issuer_path="/realms/demo") as auth:
        token = auth.mint(aud="http://127.0.0.1:8080/mcp")
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from tests.support.jwt_keys import SigningKey, hs256_jwt, sign_jwt, unsigned_jwt, verify_jwt
from tests.support.oauth_protocol import (
    GRANT_TYPES,
    NO_STORE,
    SERVER_CAPABILITIES,
    Client,
    Grant,
    OAuthError,
    authenticate_client,
    authorization_request_problem,
    form_params,
    is_absolute_uri,
    registration_problem,
    requested_resource,
    verify_pkce,
)
from tests.support.threaded_server import ThreadedServer

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # RFC 8693
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
EXCHANGEABLE_TYPES = (ACCESS_TOKEN_TYPE, "urn:ietf:params:oauth:token-type:jwt")
DEFAULT_USERS: dict[str, dict] = {
    "dev-user": {"groups": ["developer"]},
    "admin-user": {"groups": ["admin"]},
}
CODE_LIFETIME = 60


class AuthServer:
    """The authorization server and its state. Handlers run on uvicorn's thread while tests call
    the helpers from theirs; every shared update is a single dict or set operation, which the
    interpreter performs atomically, so no lock is needed."""

    def __init__(
        self,
        *,
        issuer_path: str = "",
        token_format: Literal["jwt", "opaque"] = "jwt",
        users: dict[str, dict] | None = None,
        signing_alg: Literal["RS256", "ES256"] = "RS256",
        access_token_lifetime: int = 300,
    ) -> None:
        self.issuer_path = "/" + issuer_path.strip("/") if issuer_path.strip("/") else ""
        self.token_format = token_format
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.default_user = next(iter(self.users), "dev-user")
        self.access_token_lifetime = access_token_lifetime
        self.introspection_calls = 0
        self.jwks_calls = 0
        self.exchange_calls = 0
        self.exchange_requests: list[dict[str, str]] = []  # the form of each exchange, secrets removed
        self.exchanged_tokens: list[str] = []
        self.exchange_lifetime = access_token_lifetime
        self.refuse_exchange_for: set[str] = set()  # subjects whose tokens are never exchanged
        self._key = SigningKey.generate(signing_alg)
        self._clients: dict[str, Client] = {}
        self._codes: dict[str, Grant] = {}
        self._redeemed_codes: dict[str, list[str]] = {}  # code -> access tokens issued for it
        self._refresh_tokens: dict[str, Grant] = {}
        self._opaque_tokens: dict[str, dict] = {}  # token -> claims
        self._revoked: set[str] = set()
        introspector = self.register_client(
            auth_method="client_secret_basic", grant_types=["client_credentials", TOKEN_EXCHANGE],
            client_id="gateway-introspector",
        )
        self.introspection_client: tuple[str, str] = (introspector.client_id, introspector.client_secret or "")
        self._http = ThreadedServer(self._build_app())

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._http.start()

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> AuthServer:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self._http.base_url + self.issuer_path

    authorization_url = property(lambda self: self.url + "/authorize")
    token_url = property(lambda self: self.url + "/token")
    jwks_url = property(lambda self: self.url + "/jwks")
    introspection_url = property(lambda self: self.url + "/introspect")
    registration_url = property(lambda self: self.url + "/register")

    # -- keys and tokens, for tests ----------------------------------------------------------

    @property
    def kid(self) -> str:
        return self._key.kid

    @property
    def public_key_pem(self) -> bytes:
        return self._key.public_key_pem()

    def jwks(self) -> dict:
        return {"keys": [self._key.public_jwk()]}

    def rotate_key(self) -> str:
        """Replace the signing key; the old one leaves the JWKS, so its tokens stop verifying."""
        self._key = SigningKey.generate(self._key.alg)
        return self._key.kid

    def claims(
        self,
        sub: str = "dev-user",
        *,
        aud: str | list[str] | None,
        scope: str = "openid",
        groups: list[str] | None = None,
        exp_in: int = 300,
        nbf_in: int | None = None,
        iat: int | None = None,
        iss: str | None = None,
        extra: dict | None = None,
    ) -> dict:
        """Access-token claims for `sub`; a None value in `extra` removes that claim."""
        now = int(time.time())
        claims: dict[str, Any] = {
            **self.users.get(sub, {}),
            "iss": self.url if iss is None else iss,
            "sub": sub,
            "aud": aud,
            "exp": now + exp_in,
            "iat": now if iat is None else iat,
            "nbf": now if nbf_in is None else now + nbf_in,
            "scope": scope,
            "jti": secrets.token_urlsafe(12),
        }
        if groups is not None:
            claims["groups"] = groups
        claims.update(extra or {})
        return {name: value for name, value in claims.items() if value is not None}

    def mint(
        self,
        sub: str = "dev-user",
        *,
        aud: str | list[str] | None,
        scope: str = "openid",
        groups: list[str] | None = None,
        exp_in: int = 300,
        nbf_in: int | None = None,
        iat: int | None = None,
        iss: str | None = None,
        kid: str | None = None,
        alg: str | None = None,
        key: Any = None,
        extra: dict | None = None,
        headers: dict | None = None,
    ) -> str:
        """A signed JWT access token. By default it is valid and signed with the published key;
        the arguments make it expired, premature, foreign (`iss`, `aud`), signed by another
        `key` (the header still names the published `kid` unless `kid` is given), and so on."""
        payload = self.claims(
            sub, aud=aud, scope=scope, groups=groups, exp_in=exp_in, nbf_in=nbf_in, iat=iat, iss=iss, extra=extra
        )
        header = {"typ": "at+jwt", "kid": self._key.kid if kid is None else kid, **(headers or {})}
        return sign_jwt(payload, key or self._key.private_key, alg or self._key.alg, header)

    def mint_opaque(
        self,
        sub: str = "dev-user",
        *,
        active: bool = True,
        aud: str | list[str] | None = None,
        groups: list[str] | None = None,
        exp_in: int = 300,
        scope: str = "openid",
        extra: dict | None = None,
    ) -> str:
        """A random token that only introspection can resolve; `extra` as for mint()."""
        token = secrets.token_urlsafe(32)
        self._opaque_tokens[token] = self.claims(sub, aud=aud, groups=groups, exp_in=exp_in, scope=scope, extra=extra)
        if not active:
            self._revoked.add(token)
        return token

    def revoke(self, token: str) -> None:
        """Introspection reports the token inactive from now on (a JWT still verifies locally)."""
        self._revoked.add(token)
        self._refresh_tokens.pop(token, None)

    def alg_none_token(self, sub: str = "dev-user", *, aud: str | list[str] | None) -> str:
        """Valid-looking claims with `alg: none` and an empty signature."""
        return unsigned_jwt(self.claims(sub, aud=aud), {"kid": self._key.kid})

    def hs256_with_public_key_token(self, sub: str = "dev-user", *, aud: str | list[str] | None) -> str:
        """The algorithm-confusion forgery: HMAC-SHA256 keyed with our public key's PEM, which a
        verifier that lets the token pick its algorithm would accept."""
        return hs256_jwt(self.claims(sub, aud=aud), self.public_key_pem, {"kid": self._key.kid})

    def register_client(
        self,
        redirect_uris: list[str] | None = None,
        *,
        auth_method: str = "none",
        grant_types: list[str] | None = None,
        client_id: str | None = None,
        metadata: dict | None = None,
    ) -> Client:
        """Register a client directly (what /register does over HTTP)."""
        client_id = client_id or "client-" + secrets.token_urlsafe(8)
        secret = None if auth_method == "none" else secrets.token_urlsafe(24)
        grant_types = grant_types or ["authorization_code", "refresh_token"]
        info = {
            **(metadata or {}),
            "client_id": client_id,
            "client_id_issued_at": int(time.time()),
            "redirect_uris": list(redirect_uris or []),
            "grant_types": grant_types,
            "token_endpoint_auth_method": auth_method,
        }
        if secret is not None:
            info |= {"client_secret": secret, "client_secret_expires_at": 0}
        client = Client(client_id, secret, info["redirect_uris"], grant_types, info)
        self._clients[client_id] = client
        return client

    # -- HTTP --------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        prefix = self.issuer_path
        metadata_paths = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
        if prefix:
            # RFC 8414 section 3.1 inserts the issuer path after the well-known segment;
            # OpenID Connect Discovery appends the well-known segment to the issuer instead.
            metadata_paths += [path + prefix for path in metadata_paths]
            metadata_paths.append(prefix + "/.well-known/openid-configuration")
        routes = [Route(path, self._metadata, methods=["GET"]) for path in metadata_paths]
        routes += [
            Route(prefix + "/authorize", self._authorize, methods=["GET"]),
            Route(prefix + "/token", self._token, methods=["POST"]),
            Route(prefix + "/jwks", self._jwks, methods=["GET"]),
            Route(prefix + "/introspect", self._introspect, methods=["POST"]),
            Route(prefix + "/register", self._register, methods=["POST"]),
        ]
        return Starlette(routes=routes)

    async def _metadata(self, request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "issuer": self.url,
                "authorization_endpoint": self.authorization_url,
                "token_endpoint": self.token_url,
                "jwks_uri": self.jwks_url,
                "introspection_endpoint": self.introspection_url,
                "registration_endpoint": self.registration_url,
                **SERVER_CAPABILITIES,
            }
        )

    async def _jwks(self, request: Request) -> JSONResponse:
        self.jwks_calls += 1
        return JSONResponse(self.jwks())

    async def _register(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"error": "invalid_client_metadata"}, status_code=400)
        problem = registration_problem(body)
        if problem:
            return JSONResponse({"error": problem[0], "error_description": problem[1]}, status_code=400)
        client = self.register_client(
            body.get("redirect_uris", []),
            auth_method=body.get("token_endpoint_auth_method", "client_secret_basic"),  # RFC 7591 default
            grant_types=body.get("grant_types", ["authorization_code"]),
            metadata=body,
        )
        return JSONResponse(client.metadata, status_code=201, headers=NO_STORE)

    async def _authorize(self, request: Request):
        query = request.query_params
        client = self._clients.get(query.get("client_id", ""))
        if client is None:
            return OAuthError("invalid_request", "unknown client_id").response()
        redirect_uri = query.get("redirect_uri")
        if redirect_uri is None and len(client.redirect_uris) == 1:
            redirect_uri = client.redirect_uris[0]
        if redirect_uri not in client.redirect_uris:  # exact match, OAuth 2.1 section 4.1.1
            return OAuthError("invalid_request", "redirect_uri is not registered for this client").response()

        def redirect(**params: str | None) -> RedirectResponse:
            params |= {"state": query.get("state"), "iss": self.url}
            separator = "&" if urlsplit(redirect_uri).query else "?"
            query_string = urlencode({k: v for k, v in params.items() if v is not None})
            return RedirectResponse(redirect_uri + separator + query_string, status_code=302)

        problem = authorization_request_problem(query, client)
        if problem is None and self.default_user not in self.users:
            problem = ("access_denied", f"{self.default_user!r} is not a known user")
        if problem:
            return redirect(error=problem[0], error_description=problem[1])
        code = secrets.token_urlsafe(32)
        self._codes[code] = Grant(
            client_id=client.client_id,
            sub=self.default_user,
            scope=query.get("scope") or "openid",
            resource=query.get("resource"),
            redirect_uri=redirect_uri,
            code_challenge=query["code_challenge"],
            expires_at=time.time() + CODE_LIFETIME,
        )
        return redirect(code=code)

    async def _token(self, request: Request) -> JSONResponse:
        try:
            params = await form_params(request)
            client = authenticate_client(self._clients, request, params)
            grant_type = params.get("grant_type")
            if grant_type == TOKEN_EXCHANGE and grant_type in client.grant_types:
                return self._exchange(client, params)
            if grant_type not in GRANT_TYPES:
                raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")
            if grant_type not in client.grant_types:
                raise OAuthError("unauthorized_client", f"client is not registered for {grant_type}")
            # Refresh tokens go only to clients registered for the refresh_token grant.
            refresh = "refresh_token" in client.grant_types
            if grant_type == "authorization_code":
                return self._token_response(*self._redeem_code(client, params), refresh=refresh)
            if grant_type == "refresh_token":
                return self._token_response(self._redeem_refresh_token(client, params), refresh=refresh)
            if client.client_secret is None:
                raise OAuthError("unauthorized_client", "client_credentials needs a confidential client")
            resource = params.get("resource")
            if resource is not None and not is_absolute_uri(resource):
                raise OAuthError("invalid_target", "resource must be an absolute URI")
            grant = Grant(client.client_id, client.client_id, params.get("scope") or "openid", resource)
            return self._token_response(grant, refresh=False)
        except OAuthError as error:
            return error.response()

    def _exchange(self, client: Client, params: dict[str, str]) -> JSONResponse:
        """RFC 8693: a token for `resource` or `audience` with the subject token's `sub`, and an
        `act` claim naming the actor token's subject when there is one."""
        self.exchange_calls += 1
        self.exchange_requests.append({k: v for k, v in params.items() if k not in ("client_secret",)})
        if client.client_secret is None:
            raise OAuthError("unauthorized_client", "token exchange needs a confidential client")
        if params.get("subject_token_type") not in EXCHANGEABLE_TYPES or not params.get("subject_token"):
            raise OAuthError("invalid_request", "subject_token and an access token subject_token_type are required")
        if params.get("requested_token_type", ACCESS_TOKEN_TYPE) not in EXCHANGEABLE_TYPES:
            raise OAuthError("invalid_request", "only access tokens are issued")
        subject = self._active_claims(params["subject_token"])
        if subject is None:
            raise OAuthError("invalid_grant", "the subject token is not active")
        if subject["sub"] in self.refuse_exchange_for:
            raise OAuthError("invalid_grant", "exchange is not allowed for this subject")
        resource = params.get("resource")
        if resource is not None and not is_absolute_uri(resource):
            raise OAuthError("invalid_target", "resource must be an absolute URI")
        extra: dict[str, Any] = {"client_id": client.client_id}
        if "actor_token" in params:
            actor = self._active_claims(params["actor_token"])
            if actor is None or params.get("actor_token_type") not in EXCHANGEABLE_TYPES:
                raise OAuthError("invalid_grant", "the actor token is not active")
            extra["act"] = {"sub": actor["sub"]}
        groups = subject.get("groups")
        token = self.mint(subject["sub"], aud=resource or params.get("audience") or client.client_id,
                          scope=params.get("scope") or subject.get("scope", "openid"), exp_in=self.exchange_lifetime,
                          groups=groups if isinstance(groups, list) else None, extra=extra)
        self.exchanged_tokens.append(token)
        body = {"access_token": token, "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "Bearer",
                "expires_in": self.exchange_lifetime}
        return JSONResponse(body, headers=NO_STORE)

    def _redeem_code(self, client: Client, params: dict[str, str]) -> tuple[Grant, str]:
        code = params.get("code", "")
        grant = self._codes.pop(code, None)  # single use, even when the attempt below fails
        if grant is None:
            if code in self._redeemed_codes:
                # OAuth 2.1 section 4.1.3: a replayed code revokes what it already yielded.
                self._revoked.update(self._redeemed_codes[code])
            raise OAuthError("invalid_grant", "unknown, expired or already used code")
        self._redeemed_codes[code] = []
        if grant.expires_at < time.time():
            raise OAuthError("invalid_grant", "code expired")
        if grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "code was issued to another client")
        if params.get("redirect_uri") != grant.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request")
        verify_pkce(params.get("code_verifier", ""), grant.code_challenge)
        grant.resource = requested_resource(grant, params)
        return grant, code

    def _redeem_refresh_token(self, client: Client, params: dict[str, str]) -> Grant:
        grant = self._refresh_tokens.pop(params.get("refresh_token", ""), None)  # rotated on every use
        if grant is None or grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "unknown or revoked refresh token")
        if "scope" in params:
            if not set(params["scope"].split()) <= set(grant.scope.split()):
                raise OAuthError("invalid_scope", "a refresh may only narrow the scope")
            grant.scope = params["scope"]
        grant.resource = requested_resource(grant, params)
        return grant

    def _token_response(self, grant: Grant, code: str | None = None, *, refresh: bool) -> JSONResponse:
        access_token = self._issue_access_token(grant)
        if code is not None:
            self._redeemed_codes[code].append(access_token)
        body = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": self.access_token_lifetime,
            "scope": grant.scope,
        }
        if refresh:
            body["refresh_token"] = secrets.token_urlsafe(32)
            self._refresh_tokens[body["refresh_token"]] = grant
        return JSONResponse(body, headers=NO_STORE)

    def _issue_access_token(self, grant: Grant) -> str:
        token_claims = {
            "aud": grant.resource or grant.client_id,  # RFC 8707: the token is for the named resource
            "scope": grant.scope,
            "exp_in": self.access_token_lifetime,
            "extra": {"client_id": grant.client_id},
        }
        if self.token_format == "jwt":
            return self.mint(grant.sub, **token_claims)
        token = secrets.token_urlsafe(32)
        self._opaque_tokens[token] = self.claims(grant.sub, **token_claims)
        return token

    async def _introspect(self, request: Request) -> JSONResponse:
        self.introspection_calls += 1
        try:
            params = await form_params(request)
            authenticate_client(self._clients, request, params, secret_required=True)
        except OAuthError as error:
            return error.response()
        if "token" not in params:
            return OAuthError("invalid_request", "token is required").response()
        claims = self._active_claims(params["token"])
        if claims is None:
            return JSONResponse({"active": False}, headers=NO_STORE)
        return JSONResponse(
            {**claims, "active": True, "username": claims["sub"], "token_type": "Bearer"}, headers=NO_STORE
        )

    def opaque_expiry(self, token: str) -> int:
        """When an opaque token minted here expires (epoch seconds)."""
        return self._opaque_tokens[token]["exp"]

    def _active_claims(self, token: str) -> dict | None:
        """The claims of a live access token this server issued, else None."""
        if token in self._revoked:
            return None
        if token in self._opaque_tokens:
            claims = self._opaque_tokens[token]
            return claims if claims["exp"] > time.time() else None
        return verify_jwt(token, self._key, issuer=self.url)


@contextmanager
def running_auth_server(**kwargs: Any) -> Iterator[AuthServer]:
    """`AuthServer(**kwargs)`, started for the duration of the block."""
    server = AuthServer(**kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()
