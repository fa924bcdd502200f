"""Local validation of JWT access tokens against the authorization server's JWKS.

The signature is checked by PyJWT with exactly one algorithm: the token's own `alg`, accepted only
when it is on the route's allow-list and fits the key (an RSA key verifies RS*/PS*, an EC key the
ES* of its curve, an OKP key EdDSA). HMAC algorithms and `none` are never on the list, so a public
key can never be used as an HMAC secret.

Key sets are cached per endpoint, shared by every route and policy version that names it. A token
whose `kid` is unknown triggers one refresh (a key rotation), at most once per
`REFRESH_MIN_INTERVAL` so that a stream of forged tokens cannot make the gateway hammer the
identity provider; concurrent refreshes share one request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Container
from typing import Any

import httpx
import jwt

from .oauth_settings import ALGORITHM_KEY_TYPES
from .tokens import AuthServerUnavailable, TokenRejected, fetch_json

log = logging.getLogger("mcpgw.oauth")

REFRESH_MIN_INTERVAL = 10.0  # seconds between refreshes caused by unknown key ids


class KeySet:
    """One JWKS endpoint's keys, fetched on demand and kept for the caller's TTL."""

    def __init__(self, url: str, verify: bool):
        self.url = url
        self.verify = verify
        self._keys: list[dict[str, Any]] = []
        self._fetched_at: float | None = None  # monotonic time of the last successful fetch
        self._failed_at: float | None = None  # monotonic time of the last failed fetch, cleared by a success
        self._last_failure = ""
        self._kid_refresh_at: float | None = None  # monotonic time of the last refresh an unknown kid caused
        self._refresh: asyncio.Task | None = None
        self._verifiers: dict[tuple[int, str], jwt.PyJWK] = {}

    async def key_for(self, kid: str | None, alg: str, *, ttl: float, timeout: float) -> jwt.PyJWK:
        """The key that verifies a token signed with `alg` by key `kid`. Raises TokenRejected when the
        key set has no such key, AuthServerUnavailable when the key set cannot be had."""
        if self._fetched_at is None or time.monotonic() - self._fetched_at >= ttl:
            await self._refresh_expired(timeout)
        if kid is not None and not self._knows(kid):
            now = time.monotonic()
            if self._refreshing():
                await self._refreshed(timeout)  # a rotation: wait for the fetch already under way
            elif self._kid_refresh_at is None or now - self._kid_refresh_at >= REFRESH_MIN_INTERVAL:
                log.info("JWKS %s has no key %r; fetching it again", self.url, kid)
                self._kid_refresh_at = now
                await self._refreshed(timeout)
            elif self._failed_recently():
                raise AuthServerUnavailable(f"the JWKS endpoint failed recently ({self._last_failure})")
            if not self._knows(kid):
                raise TokenRejected("The access token is signed with a key the authorization server does not publish")
        return self._verifier(kid, alg)

    async def _refresh_expired(self, timeout: float) -> None:
        if self._failed_recently() and not self._refreshing():
            if self._fetched_at is None:
                raise AuthServerUnavailable(f"the JWKS endpoint failed recently ({self._last_failure})")
            return  # keep the stale keys until the retry interval has passed
        try:
            await self._refreshed(timeout)
        except AuthServerUnavailable:
            if self._fetched_at is None:
                raise
            # Keys are public and a rotation shows up as an unknown kid; refusing every token while
            # the identity provider blinks would be worse than verifying with the keys we have.
            log.warning("JWKS %s could not be refreshed (%s); using the keys fetched %.0fs ago",
                        self.url, self._last_failure, time.monotonic() - self._fetched_at)

    def _failed_recently(self) -> bool:
        return self._failed_at is not None and time.monotonic() - self._failed_at < REFRESH_MIN_INTERVAL

    def _knows(self, kid: str) -> bool:
        return any(k.get("kid") == kid for k in self._keys)

    def _verifier(self, kid: str | None, alg: str) -> jwt.PyJWK:
        kty, curve = ALGORITHM_KEY_TYPES[alg]
        candidates = [
            (i, k) for i, k in enumerate(self._keys)
            if (kid is None or k.get("kid") == kid)
            and k.get("kty") == kty and (curve is None or k.get("crv") == curve)
            and k.get("use", "sig") == "sig" and k.get("alg", alg) == alg
        ]
        if not candidates:
            raise TokenRejected("The access token's algorithm does not match the authorization server's key")
        if kid is None and len(candidates) > 1:
            raise TokenRejected("The access token names no key (kid) and the authorization server publishes several")
        index, jwk = candidates[0]
        verifier = self._verifiers.get((index, alg))
        if verifier is None:
            try:
                # The algorithm is bound here, from the allow-list and the key type, never left to the token.
                verifier = self._verifiers[(index, alg)] = jwt.PyJWK(jwk, algorithm=alg)
            except jwt.PyJWTError as e:
                log.warning("JWKS %s key %r is unusable for %s: %s", self.url, jwk.get("kid"), alg, e)
                raise TokenRejected("The access token's signing key is unusable") from None
        return verifier

    def _refreshing(self) -> bool:
        task = self._refresh
        return task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop()

    async def _refreshed(self, timeout: float) -> None:
        """Fetch the key set, sharing a fetch already under way on this event loop."""
        task = self._refresh
        if task is None or not self._refreshing():
            task = self._refresh = asyncio.get_running_loop().create_task(self._fetch(timeout))
        await asyncio.shield(task)

    async def _fetch(self, timeout: float) -> None:
        try:
            status, body = await fetch_json(httpx.Request("GET", self.url), verify=self.verify, timeout=timeout,
                                            what="the JWKS endpoint")
            if status != 200:
                raise AuthServerUnavailable(f"the JWKS endpoint answered HTTP {status}")
            keys = body.get("keys") if isinstance(body, dict) else None
            if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
                raise AuthServerUnavailable("the JWKS endpoint answered a document without a keys list")
        except AuthServerUnavailable as e:
            self._failed_at, self._last_failure = time.monotonic(), str(e)
            raise
        self._keys, self._verifiers = keys, {}
        self._fetched_at, self._failed_at = time.monotonic(), None
        log.debug("JWKS %s: %d key(s)", self.url, len(keys))


_key_sets: dict[tuple[str, bool], KeySet] = {}


def key_set(url: str, verify: bool) -> KeySet:
    """The shared cache for one endpoint, so a policy reload keeps the keys already fetched."""
    ks = _key_sets.get((url, verify))
    if ks is None:
        ks = _key_sets[(url, verify)] = KeySet(url, verify)
    return ks


class JwtValidator:
    """Signature, algorithm, issuer and time checks for one route's settings."""

    def __init__(self, keys: KeySet, *, algorithms: list[str], issuers: Container[str] | None,
                 leeway: float, ttl: float, timeout: float):
        self.keys = keys
        self.algorithms = frozenset(algorithms)
        self.issuers = issuers
        self.leeway = leeway
        self.ttl = ttl
        self.timeout = timeout

    async def claims(self, token: str) -> dict:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("The access token is not a well-formed JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise TokenRejected("The access token's signing algorithm is not accepted")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("The access token's key id (kid) is malformed")
        key = await self.keys.key_for(kid, alg, ttl=self.ttl, timeout=self.timeout)
        try:
            return jwt.decode(token, key, algorithms=[alg], issuer=self.issuers, leeway=self.leeway,
                              options={"require": ["exp"], "verify_aud": False})
        except jwt.ExpiredSignatureError:
            raise TokenRejected("The access token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("The access token is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("The access token was issued by an unexpected issuer") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("The access token's signature is invalid") from None
        except jwt.MissingRequiredClaimError as e:
            raise TokenRejected(f"The access token has no {e.claim} claim") from None
        except jwt.PyJWTError:
            raise TokenRejected("The access token is invalid") from None
