"""Metadata discovery (identity/discovery.py) against the real test authorization server."""

from __future__ import annotations

import pytest

from mcpgw.identity.discovery import Discovery, _endpoint, metadata_urls
from mcpgw.identity.tokens import AuthServerUnavailable
from tests.support.authserver import running_auth_server


def test_metadata_urls():
    assert metadata_urls("https://as.example/realms/r/") == [
        "https://as.example/.well-known/oauth-authorization-server/realms/r",
        "https://as.example/realms/r/.well-known/openid-configuration"]
    assert metadata_urls("https://as.example") == [
        "https://as.example/.well-known/oauth-authorization-server", "https://as.example/.well-known/openid-configuration"]


def test_an_https_issuer_never_gets_http_endpoints():
    assert _endpoint("http://as.example/jwks", "https://as.example") is None
    assert _endpoint("https://as.example/jwks", "https://as.example") == "https://as.example/jwks"
    assert _endpoint("http://127.0.0.1/jwks", "http://127.0.0.1") == "http://127.0.0.1/jwks"
    assert _endpoint("file:///etc/passwd", "http://127.0.0.1") is None and _endpoint(7, "http://x") is None


async def test_discovery_finds_endpoints_and_checks_the_issuer():
    with running_auth_server(issuer_path="/realms/d") as auth:
        found = Discovery(auth.url, verify=True, ttl=60)
        assert await found.endpoint("jwks_uri", 5) == auth.jwks_url
        assert await found.endpoint("introspection_endpoint", 5) == auth.introspection_url
        with pytest.raises(AuthServerUnavailable, match="no usable nothing_here"):
            await found.endpoint("nothing_here", 5)
        foreign = Discovery(auth.url.removesuffix("/realms/d"), verify=True, ttl=60)
        with pytest.raises(AuthServerUnavailable, match="names another issuer"):
            await foreign.endpoint("jwks_uri", 5)
        with pytest.raises(AuthServerUnavailable, match="failed recently"):  # not asked again at once
            await foreign.endpoint("jwks_uri", 5)
