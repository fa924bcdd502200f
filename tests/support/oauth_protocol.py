"""OAuth 2.1 protocol pieces used by the test authorization server: error responses, client
records and authentication, registration checks, PKCE and RFC 8707 resource rules."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse

from tests.support.jwt_keys import b64url

TOKEN_ENDPOINT_AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# The fixed part of the RFC 8414 metadata document.
SERVER_CAPABILITIES = {
    "response_types_supported": ["code"],
    "grant_types_supported": list(GRANT_TYPES),
    "code_challenge_methods_supported": ["S256"],
    "token_endpoint_auth_methods_supported": list(TOKEN_ENDPOINT_AUTH_METHODS),
    "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    "authorization_response_iss_parameter_supported": True,  # RFC 9207
}
# RFC 7636 section 4.1: 43 to 128 characters from the unreserved set.
CODE_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


class OAuthError(Exception):
    """An error answered as RFC 6749 section 5.2 JSON."""

    def __init__(self, error: str, description: str, status: int = 400, headers: dict | None = None):
        super().__init__(f"{error}: {description}")
        self.error, self.description, self.status, self.headers = error, description, status, headers

    def response(self) -> JSONResponse:
        body = {"error": self.error, "error_description": self.description}
        return JSONResponse(body, status_code=self.status, headers={**NO_STORE, **(self.headers or {})})


def invalid_client(description: str) -> OAuthError:
    return OAuthError("invalid_client", description, 401, {"WWW-Authenticate": 'Basic realm="authserver"'})


@dataclass
class Client:
    client_id: str
    client_secret: str | None  # None for public clients (token_endpoint_auth_method "none")
    redirect_uris: list[str]
    grant_types: list[str]
    metadata: dict  # the registration response, echoed by /register


@dataclass
class Grant:
    """What an authorization code or a refresh token stands for."""

    client_id: str
    sub: str
    scope: str
    resource: str | None
    redirect_uri: str | None = None
    code_challenge: str | None = None
    expires_at: float = 0.0


async def form_params(request: Request) -> dict[str, str]:
    """The urlencoded body; RFC 6749 section 3.2 forbids repeating a parameter."""
    pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True)
    params = dict(pairs)
    if len(params) != len(pairs):
        raise OAuthError("invalid_request", "a parameter was repeated")
    return params


def authenticate_client(
    clients: dict[str, Client], request: Request, params: dict[str, str], *, secret_required: bool = False
) -> Client:
    """RFC 6749 section 2.3: HTTP Basic or client_secret_post (never both); public clients send
    only client_id. A confidential client may use either method."""
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "basic" or "client_secret" in params:
            raise invalid_client("use exactly one of HTTP Basic or client_secret_post")
        try:
            client_id, separator, secret = base64.b64decode(credentials, validate=True).decode().partition(":")
        except ValueError:
            raise invalid_client("malformed Basic credentials") from None
        # RFC 6749 section 2.3.1: both parts are form-urlencoded before being joined.
        client_id, secret = unquote(client_id), unquote(secret)
        if not separator or params.get("client_id", client_id) != client_id:
            raise invalid_client("malformed Basic credentials")
    else:
        client_id, secret = params.get("client_id", ""), params.get("client_secret")
    client = clients.get(client_id)
    if client is None:
        raise invalid_client("unknown client")
    if client.client_secret is None:
        if secret is not None or secret_required:
            raise invalid_client("this client cannot authenticate with a secret")
    elif secret is None or not secrets.compare_digest(secret, client.client_secret):
        raise invalid_client("client authentication failed")
    return client


def registration_problem(body: dict) -> tuple[str, str] | None:
    """The RFC 7591 section 3.2.2 error (code, description) for a registration request, if any."""
    auth_method = body.get("token_endpoint_auth_method", "client_secret_basic")
    grant_types = body.get("grant_types", ["authorization_code"])
    redirect_uris = body.get("redirect_uris", [])
    if auth_method not in TOKEN_ENDPOINT_AUTH_METHODS:
        return "invalid_client_metadata", f"unsupported token_endpoint_auth_method {auth_method!r}"
    if not isinstance(grant_types, list) or not set(grant_types) <= set(GRANT_TYPES):
        return "invalid_client_metadata", "unsupported grant_types"
    if not isinstance(redirect_uris, list) or not all(is_absolute_uri(uri) for uri in redirect_uris):
        return "invalid_redirect_uri", "redirect_uris must be absolute URIs without a fragment"
    if "authorization_code" in grant_types and not redirect_uris:
        return "invalid_redirect_uri", "the authorization_code grant needs redirect_uris"
    return None


def authorization_request_problem(query: Mapping[str, str], client: Client) -> tuple[str, str] | None:
    """The RFC 6749 section 4.1.2.1 error (code, description) for an authorization request whose
    client and redirect_uri are already known to be good, if any."""
    if query.get("response_type") != "code":
        return "unsupported_response_type", "only response_type=code is supported"
    if "authorization_code" not in client.grant_types:
        return "unauthorized_client", "the client is not registered for the authorization_code grant"
    if not query.get("code_challenge") or query.get("code_challenge_method") != "S256":
        return "invalid_request", "PKCE with code_challenge_method=S256 is required"
    if "resource" in query and not is_absolute_uri(query["resource"]):
        return "invalid_target", "resource must be an absolute URI without a fragment"  # RFC 8707
    return None


def verify_pkce(verifier: str, challenge: str | None) -> None:
    """RFC 7636 section 4.6 with S256, the only method this server accepts."""
    if not CODE_VERIFIER.fullmatch(verifier):
        raise OAuthError("invalid_grant", "code_verifier is missing or malformed")
    computed = b64url(hashlib.sha256(verifier.encode("ascii")).digest())
    if not secrets.compare_digest(computed, challenge or ""):
        raise OAuthError("invalid_grant", "code_verifier does not match code_challenge")


def is_absolute_uri(uri: Any) -> bool:
    """Absolute and without a fragment, as redirect URIs (RFC 6749) and resources (RFC 8707) must be."""
    if not isinstance(uri, str):
        return False
    parts = urlsplit(uri)
    return bool(parts.scheme and parts.netloc) and "#" not in uri


def requested_resource(grant: Grant, params: dict[str, str]) -> str | None:
    """RFC 8707 at the token endpoint: `resource` may repeat the authorized one, not change it."""
    requested = params.get("resource")
    if requested is not None and grant.resource is not None and requested != grant.resource:
        raise OAuthError("invalid_target", "resource differs from the one authorized")
    return requested or grant.resource
