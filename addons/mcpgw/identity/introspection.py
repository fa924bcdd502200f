"""RFC 7662 token introspection, with a bounded cache.

Answers are cached under the SHA-256 of the token (the token itself is never kept): an active
token until its `exp` or the TTL, whichever comes first; an inactive one only briefly, so that a
token refused a moment ago (not yet propagated, clock skew) is asked about again soon. Concurrent
requests carrying the same new token share one introspection call."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import logging
import time
from collections import OrderedDict
from urllib.parse import quote

import httpx

from ..policy.secrets import Secret
from ..state import introspection_cache as shared
from .discovery import Discovery
from .oauth_settings import ClientAuth
from .tokens import AuthServerUnavailable, TokenRejected, fetch_json

log = logging.getLogger("mcpgw.oauth")

MAX_CACHED_TOKENS = 10_000


class Introspector:
    def __init__(self, endpoint: str | Discovery, client_id: str, client_secret: Secret, client_auth: ClientAuth, *,
                 verify: bool, timeout: float, cache: bool, ttl: float, inactive_ttl: float):
        self.endpoint = endpoint
        self.client_id = client_id
        self._client_secret = client_secret
        self.client_auth = client_auth
        self.verify = verify
        self.timeout = timeout
        self.cache_enabled = cache
        self.ttl = ttl
        self.inactive_ttl = inactive_ttl
        # digest -> (expires at, claims of an active token, or None for an inactive one)
        self._cache: OrderedDict[bytes, tuple[float, dict | None]] = OrderedDict()
        self._pending: dict[bytes, asyncio.Task] = {}

    async def claims(self, token: str) -> dict:
        """The introspection answer of an active token. Raises TokenRejected for an inactive one and
        AuthServerUnavailable when there is no usable answer."""
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            expires_at, claims = cached
            if time.time() < expires_at:
                self._cache.move_to_end(digest)
                return _active(claims)
            del self._cache[digest]
        loop = asyncio.get_running_loop()
        task = self._pending.get(digest)
        if task is None or task.get_loop() is not loop:
            task = self._pending[digest] = loop.create_task(self._introspect(token, digest))
            task.add_done_callback(functools.partial(self._forget, digest))
        return _active(await asyncio.shield(task))

    def _forget(self, digest: bytes, task: asyncio.Task) -> None:
        if self._pending.get(digest) is task:
            del self._pending[digest]

    async def _introspect(self, token: str, digest: bytes) -> dict | None:
        if self.cache_enabled and (found := await shared.get(digest)) is not None:  # another gateway asked already
            self._cache[digest] = found
            return found[1]
        form = {"token": token, "token_type_hint": "access_token"}
        headers = {}
        if self.client_auth == "client_secret_basic":
            # RFC 6749 section 2.3.1: both parts are form-encoded before they are joined.
            pair = f"{quote(self.client_id, safe='')}:{quote(self._client_secret.reveal(), safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form |= {"client_id": self.client_id, "client_secret": self._client_secret.reveal()}
        endpoint = self.endpoint if isinstance(self.endpoint, str) else await self.endpoint.endpoint(
            "introspection_endpoint", self.timeout)
        request = httpx.Request("POST", endpoint, data=form, headers=headers)
        status, body = await fetch_json(request, verify=self.verify, timeout=self.timeout,
                                        what="the introspection endpoint")
        if status != 200:
            # 401/403 here means the gateway's own client credentials were refused: a configuration
            # problem, not the caller's, and still no reason to accept the token.
            raise AuthServerUnavailable(f"the introspection endpoint answered HTTP {status}")
        if not isinstance(body, dict) or not isinstance(body.get("active"), bool):
            raise AuthServerUnavailable("the introspection endpoint answered without a boolean 'active'")
        claims = body if body["active"] else None
        if self.cache_enabled:
            self._store(digest, claims)
        return claims

    def _store(self, digest: bytes, claims: dict | None) -> None:
        now = time.time()
        if claims is None:
            expires_at = now + self.inactive_ttl
        else:
            expires_at = now + self.ttl
            exp = claims.get("exp")
            if isinstance(exp, (int, float)) and not isinstance(exp, bool):
                expires_at = min(expires_at, exp)
        if expires_at <= now:
            return
        shared.put(digest, expires_at, claims)  # for the other gateways (gateway.state.backend: redis)
        self._cache[digest] = (expires_at, claims)
        self._cache.move_to_end(digest)
        while len(self._cache) > MAX_CACHED_TOKENS:
            self._cache.popitem(last=False)


def _active(claims: dict | None) -> dict:
    if claims is None:
        raise TokenRejected("The access token is not active")
    return claims


_introspectors: dict[tuple, Introspector] = {}


def introspector(endpoint: str | Discovery, client_id: str, client_secret: Secret, client_auth: ClientAuth, *,
                 verify: bool, timeout: float, cache: bool, ttl: float, inactive_ttl: float) -> Introspector:
    """The shared introspector (and cache) for these settings, so that a policy reload that does
    not change them keeps the cache."""
    key = (endpoint, client_id, client_secret, client_auth, verify, timeout, cache, ttl, inactive_ttl)
    found = _introspectors.get(key)
    if found is None:
        found = _introspectors[key] = Introspector(
            endpoint, client_id, client_secret, client_auth, verify=verify, timeout=timeout, cache=cache,
            ttl=ttl, inactive_ttl=inactive_ttl)
    return found
