"""Endpoints discovered from the authorization server's metadata (RFC 8414, OpenID Connect
Discovery 1.0): Kong's ai-mcp-oauth2 finds the JWKS this way when `jwks_endpoint` is not set, and
openid-connect finds everything from `issuer`.

The metadata is fetched on first use, never at policy load, and kept for `ttl` seconds; a failed
fetch is an `AuthServerUnavailable` (503), never a reason to accept a token. The document must name
the configured issuer (RFC 8414 section 3.3), so a metadata endpoint cannot redirect validation to
keys of another issuer; redirects are not followed."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from .jwks import key_set
from .tokens import AuthServerUnavailable, fetch_json, same_uri

FAILURE_RETRY = 10.0  # seconds before a failed discovery is tried again


def metadata_urls(issuer: str) -> list[str]:
    """RFC 8414 (well-known segment before the issuer's path), then OpenID Connect (after it)."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    rfc8414 = urlunsplit((parts.scheme, parts.netloc, "/.well-known/oauth-authorization-server" + path, "", ""))
    oidc = urlunsplit((parts.scheme, parts.netloc, path + "/.well-known/openid-configuration", "", ""))
    return [rfc8414, oidc]


def _endpoint(value: Any, issuer: str) -> str | None:
    if not isinstance(value, str):
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.scheme == "http" and urlsplit(issuer).scheme == "https":
        return None  # an https issuer's keys are not fetched in clear
    return value


class Discovery:
    """One issuer's metadata, shared by the routes that name it."""

    def __init__(self, issuer: str, verify: bool, ttl: float):
        self.issuer, self.verify, self.ttl = issuer, verify, ttl
        self._metadata: dict | None = None
        self._fetched_at = 0.0
        self._failed_at: float | None = None
        self._failure = ""
        self._lock = asyncio.Lock()

    async def endpoint(self, name: str, timeout: float) -> str:
        """`jwks_uri` or `introspection_endpoint` from the metadata."""
        metadata = await self._current(timeout)
        found = _endpoint(metadata.get(name), self.issuer)
        if found is None:
            raise AuthServerUnavailable(f"the authorization server's metadata has no usable {name}")
        return found

    async def _current(self, timeout: float) -> dict:
        now = time.monotonic()
        if self._metadata is not None and now - self._fetched_at < self.ttl:
            return self._metadata
        async with self._lock:  # concurrent requests share one fetch
            now = time.monotonic()
            if self._metadata is not None and now - self._fetched_at < self.ttl:
                return self._metadata
            if self._failed_at is not None and now - self._failed_at < FAILURE_RETRY:
                if self._metadata is not None:
                    return self._metadata  # keep what we had while the server blinks
                raise AuthServerUnavailable(f"metadata discovery failed recently ({self._failure})")
            try:
                self._metadata = await self._fetch(timeout)
            except AuthServerUnavailable as e:
                self._failed_at, self._failure = time.monotonic(), str(e)
                if self._metadata is not None:
                    return self._metadata
                raise
            self._fetched_at, self._failed_at = time.monotonic(), None
            return self._metadata

    async def _fetch(self, timeout: float) -> dict:
        problems = []
        for url in metadata_urls(self.issuer):
            status, body = await fetch_json(httpx.Request("GET", url), verify=self.verify, timeout=timeout,
                                            what="the authorization server metadata endpoint")
            if status != 200 or not isinstance(body, dict):
                problems.append(f"{url}: HTTP {status}")
                continue
            if not isinstance(body.get("issuer"), str) or not same_uri(body["issuer"], self.issuer):
                raise AuthServerUnavailable("the authorization server's metadata names another issuer")
            return body
        raise AuthServerUnavailable("no authorization server metadata (" + "; ".join(problems) + ")")


_discoveries: dict[tuple[str, bool, float], Discovery] = {}


def discovery(issuer: str, verify: bool, ttl: float) -> Discovery:
    """Shared per issuer and settings, so a policy reload keeps the metadata fetched."""
    key = (issuer, verify, ttl)
    found = _discoveries.get(key)
    if found is None:
        found = _discoveries[key] = Discovery(issuer, verify, ttl)
    return found


class DiscoveredKeySet:
    """A JWKS whose URL comes from the metadata: what JwtValidator asks of a KeySet."""

    def __init__(self, source: Discovery):
        self.source = source

    @property
    def url(self) -> str:
        return f"(discovered from {self.source.issuer})"

    async def key_for(self, kid: str | None, alg: str, *, ttl: float, timeout: float):
        url = await self.source.endpoint("jwks_uri", timeout)
        return await key_set(url, self.source.verify).key_for(kid, alg, ttl=ttl, timeout=timeout)
