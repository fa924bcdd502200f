"""What JWT validation and token introspection share: their two outcomes besides success, the
HTTP client used to reach the authorization server, and the claim checks both apply."""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import httpx

MAX_DOCUMENT_SIZE = 512 * 1024  # a JWKS or an introspection answer is a few KiB; refuse anything huge


class TokenRejected(Exception):
    """The access token is not acceptable (answered 401). The message is shown to the client, so it
    never contains the token or anything secret."""


class AuthServerUnavailable(Exception):
    """The token could not be checked because the authorization server did not give a usable
    answer (answered 503). Never a reason to accept the token."""


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[bool, httpx.AsyncClient]] = weakref.WeakKeyDictionary()


def http_client(verify: bool) -> httpx.AsyncClient:
    """One pooled client per event loop and TLS-verification setting: creating a client per call
    would build a new TLS context (tens of milliseconds) for every introspection."""
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    client = per_loop.get(verify)
    if client is None or client.is_closed:
        client = per_loop[verify] = httpx.AsyncClient(
            verify=verify, follow_redirects=False, headers={"User-Agent": "mcp-gateway", "Accept": "application/json"})
    return client


async def fetch_json(request: httpx.Request, *, verify: bool, timeout: float, what: str) -> tuple[int, Any]:
    """Send `request`; return (status, parsed JSON body). Raises AuthServerUnavailable when the
    server cannot be reached, times out, or answers something that is not a bounded JSON body."""
    client = http_client(verify)
    try:
        async with asyncio.timeout(timeout):
            response = await client.send(request, stream=True)
            try:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_SIZE:
                        raise AuthServerUnavailable(f"{what} answered more than {MAX_DOCUMENT_SIZE} bytes")
            finally:
                await response.aclose()
    except TimeoutError:
        raise AuthServerUnavailable(f"{what} did not answer within {timeout:g}s") from None
    except httpx.HTTPError as e:
        raise AuthServerUnavailable(f"{what} could not be reached ({type(e).__name__})") from None
    if response.status_code >= 500:
        raise AuthServerUnavailable(f"{what} answered HTTP {response.status_code}")
    try:
        return response.status_code, json.loads(body)
    except ValueError:
        raise AuthServerUnavailable(f"{what} answered HTTP {response.status_code} with a body that is not JSON") from None


def claim_at(claims: dict, path: Sequence[str]) -> Any:
    """The value at `path` (Kong style: ["realm_access", "user_id"] is claims.realm_access.user_id),
    or None when any step is missing."""
    value: Any = claims
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def same_uri(a: str, b: str) -> bool:
    """URIs compared as strings, except for a trailing slash (JSON libraries and URL parsers
    disagree on whether `https://host` ends with one)."""
    return a.rstrip("/") == b.rstrip("/")


def check_audience(claims: dict, resources: Iterable[str]) -> None:
    """RFC 8707 / the MCP authorization spec: the token must have been issued for this resource."""
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else None
    if not audiences:
        raise TokenRejected("The access token has no audience (aud); it must be issued for this resource")
    if not any(isinstance(a, str) and same_uri(a, r) for a in audiences for r in resources):
        raise TokenRejected("The access token was issued for another audience")


def check_audience_required(claims: dict, required: tuple[frozenset[str], ...], path: Sequence[str]) -> None:
    """openid-connect's audience_required, read from its audience_claim (a claim path): each entry
    a set of audiences all required, any one entry suffices (Kong's AND/OR rule for `*_required`).
    The claim is a list of strings or one string (space-separated, as Kong reads claim values);
    audiences compare exactly. Anything else in it (a number, an object, a list holding one) makes
    the token malformed rather than quietly dropping what cannot be compared."""
    value: Any = claim_at(claims, path)
    if isinstance(value, str):
        audiences = value.split()
    elif isinstance(value, list) and all(isinstance(a, str) for a in value):
        audiences = value
    elif value is None:
        audiences = []
    else:
        raise TokenRejected(f"The access token's audience ({'.'.join(path)}) is malformed")
    if not audiences:
        raise TokenRejected(f"The access token has no audience ({'.'.join(path)}); it must be issued for this resource")
    have = frozenset(audiences)
    if not any(entry <= have for entry in required):
        raise TokenRejected("The access token was issued for another audience")


def check_times(claims: dict, leeway: float) -> None:
    """exp and nbf of an introspection answer (a JWT's are checked by the JWT library)."""
    now = time.time()
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if exp is not None:
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            raise TokenRejected("The access token's expiry (exp) is malformed")
        if exp <= now - leeway:
            raise TokenRejected("The access token has expired")
    if nbf is not None:
        if not isinstance(nbf, (int, float)) or isinstance(nbf, bool):
            raise TokenRejected("The access token's not-before time (nbf) is malformed")
        if nbf > now + leeway:
            raise TokenRejected("The access token is not valid yet")
