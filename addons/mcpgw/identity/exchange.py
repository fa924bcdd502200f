"""RFC 8693 token exchange on OAuth routes (Kong's ai-mcp-oauth2 `token_exchange`), a phase of
its own.

Once `oauth.authenticate` has validated the caller's token (and removed it from the request) and
every decision on the request is taken (route access, ACL, limits, integrity), `exchange_token`
trades the caller's token at the authorization server's token endpoint for a token meant for the
upstream, and sends that one upstream in its place: a token issued for the gateway never reaches
a server of another audience (MCP authorization spec, "token passthrough"), and a refused request
never costs an exchange. Exchanged tokens are cached per caller token and request settings until
shortly before they expire, in this process and, with `gateway.state.backend: redis`, shared
(state/exchange_cache.py).

A token the authorization server refuses to exchange (HTTP 400: invalid_grant, invalid_target...)
is answered 401 like any refused token; any other failure (unreachable, 5xx, the gateway's own
client refused, a malformed answer) is answered 502. Nothing is forwarded in either case. Each
exchange, served from the cache or not, is named in the flow's audit records (`token_exchange`:
the issued token's subject, audience and issuer, never a token)."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from mitmproxy import http

from .. import redaction
from ..policy.derived import PerPolicy
from ..policy.secrets import Secret
from ..responses import bearer_challenge, json_response
from ..state.exchange_cache import CacheKey, SelectedExchangeCache
from ..state.handover import kept_on
from ..state.tokens import MemoryTokenCache
from .exchange_settings import TokenExchangeConfig
from .tokens import AuthServerUnavailable, fetch_json

if TYPE_CHECKING:
    from ..context import FlowContext
    from ..policy.models import Policy

log = logging.getLogger("mcpgw.oauth")

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token: safe to put in a header
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")


class ExchangeRefused(Exception):
    """The authorization server would not exchange this caller's token (answered 401)."""


class ExchangeFailed(Exception):
    """No usable answer from the token endpoint (answered 502); never a reason to forward."""


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
        # the digests' common start, hashed once: two labels, one material (the settings, then the tokens)
        self._name_base = hashlib.sha256(b"mcpgw exchange name\0" + self._settings.encode() + b"\0")
        self._seal_base = hashlib.sha256(b"mcpgw exchange seal\0" + self._settings.encode() + b"\0")

    def cache_key(self, subject_token: str, actor_token: str | None) -> CacheKey:
        """Per caller token (and actor token) and request settings: an exchanged token only ever
        serves requests carrying the very token it was issued for, whose validity the route has
        just checked; a new token of the same user (a refresh, another client) is exchanged again.
        Two digests of one material with distinct labels: the name, stored, and the sealing
        secret, never stored (state/exchange_cache.py)."""
        name, seal = self._name_base.copy(), self._seal_base.copy()
        for part in (subject_token, actor_token or ""):  # length-prefixed: no two inputs read alike
            data = part.encode()
            name.update(b"%d:%s" % (len(data), data))
            seal.update(b"%d:%s" % (len(data), data))
        return CacheKey(name.hexdigest(), seal.digest())

    async def token_for(self, cache: SelectedExchangeCache, subject_token: str,
                        actor_token: str | None) -> tuple["Exchanged", bool]:
        """(the exchanged token, whether it came from the cache)."""
        key = self.cache_key(subject_token, actor_token)
        if self.config.cache.enabled:
            found = await cache.get(key)
            if found is not None:
                return found, True
        # Concurrent first requests with one token share one exchange.
        loop = asyncio.get_running_loop()
        task = self._pending.get(key.name)
        if task is None or task.get_loop() is not loop:
            task = self._pending[key.name] = loop.create_task(self._exchange(cache, key, subject_token, actor_token))
            task.add_done_callback(functools.partial(self._forget, key.name))
        return await asyncio.shield(task), False

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

    async def _exchange(self, cache: SelectedExchangeCache, key: CacheKey, subject_token: str,
                        actor_token: str | None) -> "Exchanged":
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
        exchanged = Exchanged(token, *_described(token, self.config))
        if self.config.cache.enabled:
            expires_in = body.get("expires_in")
            usable = isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool)
            # Kong: the answer's expires_in, else cache.ttl; here also never past cache.ttl, and
            # given up expiry_margin early so that the upstream never sees it expire in flight.
            ttl = min(expires_in - self.config.expiry_margin, self.config.cache.ttl) if usable else self.config.cache.ttl
            await cache.put(key, exchanged, time.time() + ttl)
        return exchanged


@dataclass(frozen=True, slots=True)
class Exchanged:
    """An exchanged token and what audit records say of it (from the token itself when it is a
    JWT the token endpoint just handed over, else from what was asked for)."""

    token: str
    subject: str | None
    audience: Any
    issuer: str | None

    def encode(self) -> str:
        return json.dumps({"token": self.token, "sub": self.subject, "aud": self.audience, "iss": self.issuer})

    def audit(self, cached: bool) -> dict:
        return {"subject": self.subject, "audience": self.audience, "issuer": self.issuer, "cached": cached}


def decode(value: str) -> Exchanged | None:
    """An entry of the shared cache (sealed, so written by a gateway; still checked)."""
    try:
        found = json.loads(value)
        if isinstance(found, dict) and isinstance(found.get("token"), str) and _TOKEN.fullmatch(found["token"]):
            return Exchanged(found["token"], found.get("sub"), found.get("aud"), found.get("iss"))
    except ValueError:
        pass
    return None


def _described(token: str, config: TokenExchangeConfig) -> tuple[str | None, Any, str | None]:
    """(subject, audience, issuer) of an issued token, for audit only: the payload of a JWT is
    read unverified (it came straight from the token endpoint, and decides nothing here)."""
    claims: Any = None
    parts = token.split(".")
    if len(parts) == 3:
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except ValueError:
            claims = None
    claims = claims if isinstance(claims, dict) else {}
    text = lambda v: v if isinstance(v, str) else None  # noqa: E731
    audience = claims.get("aud")
    if not (isinstance(audience, str) or (isinstance(audience, list) and all(isinstance(a, str) for a in audience))):
        r = config.request
        audience = [*r.audience, *([r.resource] if r.resource else [])] or None
    return text(claims.get("sub")), audience, text(claims.get("iss"))


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


def _compile(policy: "Policy") -> dict[str, Exchanger]:
    out = {}
    for name, route in policy.routes.items():
        te = route.oauth.token_exchange if route.oauth is not None else None
        if te is not None and te.enabled:
            out[name] = compile_exchanger(te, route.oauth)
    return out


_routes = PerPolicy(_compile)
_cache = SelectedExchangeCache(MemoryTokenCache(), lambda: None, Exchanged.encode, decode)
_MASTER_ATTRIBUTE = "_mcpgw_token_cache"
# Tokens this import has added to the redaction set: a cached one (another gateway's, or one kept
# across a script reload, when the redaction set starts empty) is added once, not on every request.
_masked: set[str] = set()


def install(master: object, policy) -> SelectedExchangeCache:
    """The addon's `load`: this process's cache is kept on the mitmproxy master, so that a script
    reload keeps exchanged tokens; `policy()` is the active policy, whose state backend says
    whether Redis is asked too."""
    global _cache
    _cache = SelectedExchangeCache(kept_on(master, _MASTER_ATTRIBUTE, MemoryTokenCache), policy, Exchanged.encode, decode)
    return _cache


def refused(ctx: "FlowContext", description: str) -> http.Response:
    value = bearer_challenge(resource_metadata=ctx.prm_url, error="invalid_token", description=description)
    return json_response(401, {"error": "unauthorized", "error_description": description}, {"WWW-Authenticate": value})


def failed(description: str) -> http.Response:
    return json_response(502, {"error": "bad_gateway", "error_description": description})


async def exchange_token(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """The phase: on a route with token_exchange, put the exchanged token in Authorization, or
    answer the refusal. The caller's token and actor token never go upstream."""
    if ctx.access_token is None or ctx.match is None:
        return None
    exchanger = _routes(ctx.snapshot.policy).get(ctx.match.name)
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
    try:
        exchanged, cached = await exchanger.token_for(_cache, ctx.access_token, actor)
    except ExchangeRefused as e:
        log.info("route %s: token exchange refused by the authorization server (%s)", ctx.route_name, e)
        ctx.audit_fields["token_exchange"] = {"error": str(e)}
        return refused(ctx, f"The access token could not be exchanged for the upstream ({e})")
    except ExchangeFailed as e:
        log.warning("route %s: token exchange failed: %s; refusing", ctx.route_name, e)
        ctx.audit_fields["token_exchange"] = {"error": "token_endpoint_failed"}
        return failed("The access token could not be exchanged for the upstream because the token "
                      "exchange endpoint failed; nothing was forwarded")
    if exchanged.token not in _masked:
        if len(_masked) >= 10_000:
            _masked.clear()
        redaction.remember([exchanged.token])
        _masked.add(exchanged.token)
    ctx.audit_fields["token_exchange"] = exchanged.audit(cached)
    request.headers["Authorization"] = f"Bearer {exchanged.token}"
    return None
