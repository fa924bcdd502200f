"""RFC 8693 token exchange on OAuth routes (Kong's ai-mcp-oauth2 `token_exchange`).

Once `oauth.authenticate` has validated the caller's token, the gateway trades it at the
authorization server's token endpoint for a token meant for the upstream, and sends that one
upstream in place of the caller's: a token issued for the gateway never reaches a server of
another audience (MCP authorization spec, "token passthrough"). Exchanged tokens are cached in a
`state.tokens.TokenCache` per subject and request settings until shortly before they expire.

A token the authorization server refuses to exchange (HTTP 400: invalid_grant, invalid_target...)
is answered 401 like any refused token; any other failure (unreachable, 5xx, the gateway's own
client refused, a malformed answer) is answered 502. Nothing is forwarded in either case."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import logging
import re
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote, urlsplit

import httpx
from mitmproxy import http
from pydantic import Field, field_validator, model_validator

from .. import redaction
from ..policy.base import StrictModel
from ..policy.secrets import Secret, SecretValue
from ..responses import bearer_challenge, json_response
from ..state.handover import kept_on
from ..state.tokens import MemoryTokenCache, TokenCache
from .tokens import AuthServerUnavailable, fetch_json

if TYPE_CHECKING:
    from ..context import FlowContext

log = logging.getLogger("mcpgw.oauth")

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token: safe to put in a header
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
ExchangeClientAuth = Literal["inherit", "client_secret_basic", "client_secret_post", "none"]


class ExchangeRefused(Exception):
    """The authorization server would not exchange this caller's token (answered 401)."""


class ExchangeFailed(Exception):
    """No usable answer from the token endpoint (answered 502); never a reason to forward."""


class TokenExchangeRequest(StrictModel):
    """What the gateway asks for (RFC 8693 section 2.1)."""

    subject_token_type: str = Field(ACCESS_TOKEN_TYPE, description="Type of the caller's token")
    requested_token_type: str = Field(ACCESS_TOKEN_TYPE, description="Type of token asked for")
    audience: list[str] = Field(default_factory=list, description="Logical names of the upstream (`audience`, repeated)")
    resource: str | None = Field(None, description="Absolute URI of the upstream (RFC 8707 `resource`)")
    scopes: list[str] = Field(default_factory=list, description="Scopes asked for (`scope`, space separated)")
    actor_token_source: Literal["none", "header", "config"] = Field("none", description="Where an actor token comes from")
    actor_token_header: str | None = Field(None, description="Request header carrying the actor token (source header)")
    actor_token: SecretValue | None = Field(None, description="A fixed actor token (source config; plain or a secret reference)")
    actor_token_type: str = Field(ACCESS_TOKEN_TYPE, description="Type of the actor token")

    @field_validator("resource")
    @classmethod
    def _check_resource(cls, v: str | None) -> str | None:
        parts = urlsplit(v) if v is not None else None
        if parts is not None and (not parts.scheme or parts.fragment):
            raise ValueError(f"resource must be an absolute URI without a fragment (RFC 8707), got {v!r}")
        return v

    @field_validator("actor_token_header")
    @classmethod
    def _check_header(cls, v: str | None) -> str | None:
        if v is not None and not _HEADER_NAME.fullmatch(v):
            raise ValueError(f"{v!r} is not a header name")
        return v

    @model_validator(mode="after")
    def _check_actor(self) -> "TokenExchangeRequest":
        if (self.actor_token_source == "header") != (self.actor_token_header is not None):
            raise ValueError("actor_token_source: header goes with actor_token_header (and only with it)")
        if (self.actor_token_source == "config") != (self.actor_token is not None):
            raise ValueError("actor_token_source: config goes with actor_token (and only with it)")
        return self


class TokenExchangeCacheConfig(StrictModel):
    enabled: bool = Field(True, description="Reuse an exchanged token for the same subject and request")
    ttl: float = Field(3600, gt=0, description="Seconds an exchanged token is reused when the answer has no expires_in")


class TokenExchangeConfig(StrictModel):
    """Kong's `token_exchange` (same names)."""

    enabled: bool = Field(True, description="Exchange the caller's token (false: the block is ignored; "
                                             "Kong's default is false, decK files name it)")
    token_endpoint: str = Field(description="The authorization server's token endpoint")
    client_auth: ExchangeClientAuth = Field(
        "client_secret_basic", description="client_secret_basic/_post, none, or inherit: the introspection client and method")
    client_id: str | None = Field(None, description="The gateway's client at the token endpoint")
    client_secret: SecretValue | None = Field(None, description="Its secret (plain or a secret reference)")
    request: TokenExchangeRequest = Field(default_factory=TokenExchangeRequest)
    cache: TokenExchangeCacheConfig = Field(default_factory=TokenExchangeCacheConfig)
    expiry_margin: float = Field(30, ge=0, le=600, description="Seconds before its expiry a cached token is no longer used")

    @field_validator("token_endpoint")
    @classmethod
    def _check_endpoint(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"token_endpoint must be an absolute http(s) URL, got {v!r}")
        return v

    @model_validator(mode="after")
    def _check_client(self) -> "TokenExchangeConfig":
        if self.client_auth in ("client_secret_basic", "client_secret_post") and (
                not self.client_id or self.client_secret is None):
            raise ValueError(f"client_auth {self.client_auth} needs client_id and client_secret")
        if self.client_auth == "none" and not self.client_id:
            raise ValueError("client_auth none still names the gateway's client: set client_id")
        if self.client_auth in ("inherit", "none") and self.client_secret is not None:
            raise ValueError(f"client_secret is not used with client_auth {self.client_auth}")
        return self


class Exchanger:
    """One route's exchange settings, compiled once per policy version; the client credentials
    are resolved here (inherit: the introspection client's)."""

    def __init__(self, config: TokenExchangeConfig, client_id: str, secret: Secret | None, auth: str, *,
                 verify: bool, timeout: float):
        self.config = config
        self.client_id = client_id
        self._secret = secret
        self.auth = auth
        self.verify = verify
        self.timeout = timeout
        r = config.request
        # Everything but the subject and actor that makes two exchanges ask the same thing.
        self._settings = json.dumps([config.token_endpoint, client_id, r.subject_token_type, r.requested_token_type,
                                     sorted(r.audience), r.resource, sorted(r.scopes), r.actor_token_type])
        self._pending: dict[str, asyncio.Task] = {}

    def cache_key(self, claims: dict, subject_token: str, actor_token: str | None) -> str:
        """Per subject (issuer, sub and the scope it granted) and request; a token without `sub`
        is keyed by its own digest. The key is a digest: no token or claim is stored in clear."""
        sub = claims.get("sub")
        subject = ["sub", claims.get("iss"), sub, claims.get("scope")] if isinstance(sub, str) and sub else [
            "token", hashlib.sha256(subject_token.encode()).hexdigest()]
        actor = hashlib.sha256(actor_token.encode()).hexdigest() if actor_token else None
        text = json.dumps([self._settings, subject, actor])
        return "mcpgw:exchange:" + hashlib.sha256(text.encode()).hexdigest()

    async def token_for(self, cache: TokenCache, claims: dict, subject_token: str, actor_token: str | None) -> str:
        key = self.cache_key(claims, subject_token, actor_token)
        if self.config.cache.enabled:
            found = await cache.get(key)
            if found is not None:
                return found
        # Concurrent first requests of one subject share one exchange.
        loop = asyncio.get_running_loop()
        task = self._pending.get(key)
        if task is None or task.get_loop() is not loop:
            task = self._pending[key] = loop.create_task(self._exchange(cache, key, subject_token, actor_token))
            task.add_done_callback(functools.partial(self._forget, key))
        return await asyncio.shield(task)

    def _forget(self, key: str, task: asyncio.Task) -> None:
        if self._pending.get(key) is task:
            del self._pending[key]

    def _form(self, subject_token: str, actor_token: str | None) -> tuple[dict[str, str | list[str]], dict[str, str]]:
        r = self.config.request
        form: dict[str, str | list[str]] = {
            "grant_type": GRANT_TYPE, "subject_token": subject_token, "subject_token_type": r.subject_token_type,
            "requested_token_type": r.requested_token_type}
        # RFC 8693 section 2.1: audience and resource may each be repeated (a list is sent repeated).
        if r.audience:
            form["audience"] = r.audience[0] if len(r.audience) == 1 else list(r.audience)
        if r.resource:
            form["resource"] = r.resource
        if r.scopes:
            form["scope"] = " ".join(r.scopes)
        if actor_token:
            form |= {"actor_token": actor_token, "actor_token_type": r.actor_token_type}
        headers: dict[str, str] = {}
        if self.auth == "client_secret_basic" and self._secret is not None:
            pair = f"{quote(self.client_id, safe='')}:{quote(self._secret.reveal(), safe='')}"  # RFC 6749 2.3.1
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif self.auth == "client_secret_post" and self._secret is not None:
            form |= {"client_id": self.client_id, "client_secret": self._secret.reveal()}
        else:
            form["client_id"] = self.client_id
        return form, headers

    async def _exchange(self, cache: TokenCache, key: str, subject_token: str, actor_token: str | None) -> str:
        form, headers = self._form(subject_token, actor_token)
        request = httpx.Request("POST", self.config.token_endpoint, data=form, headers=headers)
        try:
            status, body = await fetch_json(request, verify=self.verify, timeout=self.timeout,
                                            what="the token exchange endpoint")
        except AuthServerUnavailable as e:
            raise ExchangeFailed(str(e)) from None
        if status == 400:
            # RFC 6749 section 5.2 via RFC 8693 2.2.2: the subject token (or what was asked for) is refused.
            code = body.get("error") if isinstance(body, dict) else None
            raise ExchangeRefused(code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else "invalid_request")
        if status != 200:
            # 401/403: the gateway's own client was refused, a configuration problem, not the caller's.
            raise ExchangeFailed(f"the token exchange endpoint answered HTTP {status}")
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise ExchangeFailed("the token exchange endpoint answered without a usable access_token")
        if str(body.get("token_type", "")).lower() not in ("bearer", "n_a"):
            raise ExchangeFailed(f"the token exchange endpoint issued a token of type {body.get('token_type')!r}, not Bearer")
        redaction.remember([token])  # it goes upstream in a header: keep it out of logs and flows
        if self.config.cache.enabled:
            expires_in = body.get("expires_in")
            usable = isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool)
            # Kong: the answer's expires_in, else cache.ttl; here also never past cache.ttl, and
            # given up expiry_margin early so that the upstream never sees it expire in flight.
            ttl = min(expires_in - self.config.expiry_margin, self.config.cache.ttl) if usable else self.config.cache.ttl
            await cache.put(key, token, ttl)
        return token


def compile_exchanger(config: TokenExchangeConfig, oauth) -> Exchanger:
    """`oauth` is the route's OAuthConfig; `inherit` takes its introspection client."""
    if config.client_auth == "inherit":
        if not oauth.client_id or oauth.client_secret is None:
            raise ValueError("token_exchange client_auth inherit needs the route's introspection client "
                             "(client_id and client_secret); set token_exchange client_id and client_secret")
        return Exchanger(config, oauth.client_id, oauth.client_secret, oauth.client_auth,
                         verify=oauth.ssl_verify, timeout=oauth.timeout)
    assert config.client_id
    return Exchanger(config, config.client_id, config.client_secret, config.client_auth,
                     verify=oauth.ssl_verify, timeout=oauth.timeout)


_cache: TokenCache = MemoryTokenCache()
_MASTER_ATTRIBUTE = "_mcpgw_token_cache"


def use(cache: TokenCache) -> None:
    """Use another cache (a shared one, when the gateway runs as several replicas)."""
    global _cache
    _cache = cache


def handover(master: object) -> TokenCache:
    """The cache kept on the mitmproxy master, so that a script reload keeps exchanged tokens."""
    cache = kept_on(master, _MASTER_ATTRIBUTE, MemoryTokenCache)
    use(cache)
    return cache


def refused(ctx: "FlowContext", description: str) -> http.Response:
    value = bearer_challenge(resource_metadata=ctx.prm_url, error="invalid_token", description=description)
    return json_response(401, {"error": "unauthorized", "error_description": description}, {"WWW-Authenticate": value})


def failed(description: str) -> http.Response:
    return json_response(502, {"error": "bad_gateway", "error_description": description})


async def exchange_token(ctx: "FlowContext", flow: http.HTTPFlow, exchanger: Exchanger | None) -> http.Response | None:
    """Called by the OAuth phase once the caller's token is valid: put the exchanged token in
    Authorization, or answer the refusal. The caller's token and actor token never go upstream."""
    if exchanger is None:
        return None
    request = flow.request
    settings = exchanger.config.request
    actor = settings.actor_token.reveal() if settings.actor_token is not None else None
    header = settings.actor_token_header
    if header is not None:
        actor = request.headers.get(header) or None
        request.headers.pop(header, None)
        if actor is None:
            return refused(ctx, f"The {header} header with the actor token is missing")
    request.headers.pop("authorization", None)  # authenticate removed it already; never the caller's upstream
    assert ctx.access_token is not None and ctx.token_claims is not None
    try:
        token = await exchanger.token_for(_cache, ctx.token_claims, ctx.access_token, actor)
    except ExchangeRefused as e:
        log.info("route %s: token exchange refused by the authorization server (%s)", ctx.route_name, e)
        return refused(ctx, f"The access token could not be exchanged for the upstream ({e})")
    except ExchangeFailed as e:
        log.warning("route %s: token exchange failed: %s; refusing", ctx.route_name, e)
        return failed("The access token could not be exchanged for the upstream because the token "
                      "exchange endpoint failed; nothing was forwarded")
    request.headers["Authorization"] = f"Bearer {token}"
    return None
