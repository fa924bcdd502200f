"""Token exchange (identity/exchange.py) against the real test authorization server, and its cache
(state/tokens.py in memory, state/exchange_cache.py in front of it)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from mcpgw.identity.exchange import Exchanger, ExchangeFailed, ExchangeRefused, TokenExchangeConfig, compile_exchanger
from mcpgw.identity.oauth import OAuthConfig
from mcpgw.policy.secrets import Secret
from mcpgw.state.exchange_cache import SelectedExchangeCache
from mcpgw.state.tokens import MemoryTokenCache
from tests.support.authserver import running_auth_server


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def auth():
    with running_auth_server() as server:
        yield server


def exchanger(auth, **config) -> Exchanger:
    client_id, secret = auth.introspection_client
    cfg = TokenExchangeConfig(token_endpoint=auth.token_url, client_auth="client_secret_basic", client_id=client_id,
                              client_secret=secret, **config)
    return Exchanger(cfg, client_id, cfg.client_secret, cfg.client_auth, verify=True, timeout=5)


def memory(clock=None) -> SelectedExchangeCache:
    return SelectedExchangeCache(MemoryTokenCache(clock=clock) if clock else MemoryTokenCache(), lambda: None)


async def token(ex: Exchanger, cache, user: str):
    return (await ex.token_for(cache, user, None))[0]


def claims_of(auth, token: str) -> dict:
    from tests.support.jwt_keys import verify_jwt
    return verify_jwt(token, auth._key, issuer=auth.url)


async def test_memory_cache_expires_and_evicts():
    clock = Clock()
    cache = MemoryTokenCache(capacity=2, clock=clock)
    await cache.put("a", "token-a", 10)
    await cache.put("zero", "never", 0)
    assert await cache.get("a") == "token-a" and await cache.get("zero") is None
    clock.now += 10
    assert await cache.get("a") is None and len(cache) == 0
    for key in ("x", "y", "z"):
        await cache.put(key, key, 60)
    assert await cache.get("x") is None and await cache.get("z") == "z"
    await cache.drop("z")
    assert await cache.get("z") is None


async def test_exchange_is_cached_until_expiry_margin(auth):
    auth.exchange_lifetime = 40
    try:
        ex = exchanger(auth, request={"resource": "https://up.example/mcp"}, expiry_margin=30)
        clock = Clock()
        cache = memory(clock)
        user = auth.mint("alice", aud="https://gw.example/mcp")
        before = auth.exchange_calls
        first, cached = await ex.token_for(cache, user, None)
        assert not cached
        assert claims_of(auth, first.token)["aud"] == "https://up.example/mcp"
        assert (first.subject, first.audience, first.issuer) == ("alice", "https://up.example/mcp", auth.url)
        again, cached = await ex.token_for(cache, user, None)
        assert cached and again.token == first.token and again.audit(cached)["subject"] == "alice"
        clock.now += 9  # 40 s lifetime, 30 s margin: reused for 10 s
        assert (await token(ex, cache, user)).token == first.token
        clock.now += 1
        assert (await token(ex, cache, user)).token != first.token
        assert auth.exchange_calls - before == 2
    finally:
        auth.exchange_lifetime = auth.access_token_lifetime


async def test_concurrent_first_requests_share_one_exchange(auth):
    ex = exchanger(auth)
    cache = memory()
    user = auth.mint("concurrent", aud="https://gw.example/mcp")
    before = auth.exchange_calls
    tokens = await asyncio.gather(*(token(ex, cache, user) for _ in range(5)))
    assert len({t.token for t in tokens}) == 1 and auth.exchange_calls - before == 1


async def test_a_new_token_of_the_same_subject_is_exchanged_again(auth):
    ex = exchanger(auth)
    cache = memory()
    first, second = auth.mint("same-user", aud="https://gw.example/mcp"), auth.mint("same-user", aud="https://gw.example/mcp", scope="openid x")
    before = auth.exchange_calls
    one, two = await token(ex, cache, first), await token(ex, cache, second)
    assert one.token != two.token and auth.exchange_calls - before == 2


def test_cache_key_is_per_token_actor_and_settings(auth):
    ex = exchanger(auth)
    key = ex.cache_key("token-1", None)
    assert ex.cache_key("token-1", None) == key
    assert ex.cache_key("token-2", None).name != key.name
    assert ex.cache_key("token-1", "actor").name != key.name
    assert exchanger(auth, request={"audience": ["x"]}).cache_key("token-1", None).name != key.name
    assert exchanger(auth, request={"resource": "https://a.example/"}).cache_key("token-1", None).name != key.name
    assert len(key.secret) == 32 and key.secret.hex() != key.name  # the sealing secret is not the stored name
    assert "token-1" not in key.name


async def test_refusal_and_failures(auth):
    cache = memory()
    auth.refuse_exchange_for.add("refused-user")
    user = auth.mint("refused-user", aud="https://gw.example/mcp")
    with pytest.raises(ExchangeRefused, match="invalid_grant"):
        await exchanger(auth).token_for(cache, user, None)
    good = auth.mint("someone", aud="https://gw.example/mcp")
    wrong = TokenExchangeConfig(token_endpoint=auth.token_url, client_auth="client_secret_post",
                                client_id=auth.introspection_client[0], client_secret="not-the-secret")
    bad_client = Exchanger(wrong, wrong.client_id, wrong.client_secret, "client_secret_post", verify=True, timeout=5)
    with pytest.raises(ExchangeFailed, match="HTTP 401"):  # the gateway's own client refused: 502, not the caller's fault
        await bad_client.token_for(cache, good, None)
    down = TokenExchangeConfig(token_endpoint="http://127.0.0.1:9/token", client_auth="none", client_id="x")
    with pytest.raises(ExchangeFailed, match="could not be reached"):
        await Exchanger(down, "x", None, "none", verify=True, timeout=2).token_for(cache, good, None)


def test_config_validation(auth):
    with pytest.raises(ValidationError, match="needs client_id and client_secret"):
        TokenExchangeConfig(token_endpoint=auth.token_url, client_auth="client_secret_basic")
    with pytest.raises(ValidationError, match="absolute http"):
        TokenExchangeConfig(token_endpoint="/token")
    with pytest.raises(ValidationError, match="actor_token_header"):
        TokenExchangeConfig(token_endpoint=auth.token_url, request={"actor_token_source": "header"})
    with pytest.raises(ValidationError, match="not used with client_auth inherit"):
        TokenExchangeConfig(token_endpoint=auth.token_url, client_auth="inherit", client_secret="s")
    with pytest.raises(ValidationError, match="actor_token_source: config"):
        TokenExchangeConfig(token_endpoint=auth.token_url, client_auth="none", client_id="x",
                            request={"actor_token": "t0ken-value"})
    with pytest.raises(ValidationError, match="absolute URI"):
        TokenExchangeConfig(token_endpoint=auth.token_url, client_auth="none", client_id="x",
                            request={"resource": "upstream"})
    with pytest.raises(ValidationError, match="inherit takes the introspection client"):
        OAuthConfig(authorization_servers=[auth.url], jwks_endpoint=auth.jwks_url,
                    token_exchange={"token_endpoint": auth.token_url, "client_auth": "inherit"})
    oauth = OAuthConfig(authorization_servers=[auth.url], introspection_endpoint=auth.introspection_url,
                        client_id="gw", client_secret="s3cret", client_auth="client_secret_post",
                        token_exchange={"token_endpoint": auth.token_url, "client_auth": "inherit"})
    compiled = compile_exchanger(oauth.token_exchange, oauth)
    assert (compiled.client_id, compiled.auth) == ("gw", "client_secret_post")
    assert isinstance(oauth.client_secret, Secret)
