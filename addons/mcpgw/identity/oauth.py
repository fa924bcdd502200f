"""OAuth 2 resource server per route (Kong's ai-mcp-oauth2).

A route with `oauth:` accepts only requests carrying a bearer access token that is valid for it:
checked locally as a JWT against the authorization server's JWKS (`jwks_endpoint`), or by RFC 7662
introspection (`introspection_endpoint`). The token's claims then map to a consumer and consumer
groups. A request without a usable token is answered 401 with the RFC 9728 challenge that lets an
MCP client discover the authorization server; a token that cannot be checked because the
authorization server is unreachable is answered 503. Neither is ever forwarded."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mitmproxy import http
from pydantic import Field, field_validator, model_validator

from ..headers import header_values
from ..policy.base import StrictModel
from ..policy.derived import PerPolicy
from ..policy.secrets import SecretValue
from ..responses import bearer_challenge, json_response
from . import claim_headers, exchange
from .claim_headers import ClaimToHeader, UpstreamHeader, check_settings as check_claim_headers
from .consumers import ConsumerField, ConsumerIndex, Identity, consumer_index
from .exchange import Exchanger, TokenExchangeConfig, compile_exchanger
from .introspection import ClientAuth, Introspector, introspector
from .discovery import DiscoveredKeySet, discovery
from .jwks import ALGORITHM_KEY_TYPES, DEFAULT_ALGORITHMS, JwtValidator, key_set
from .resource import candidates as audiences
from .tokens import AuthServerUnavailable, TokenRejected, check_audience, check_times, claim_at

if TYPE_CHECKING:
    from ..context import FlowContext
    from ..policy.models import Policy

log = logging.getLogger("mcpgw.oauth")

ClaimPath = list[str]
# RFC 6750 section 2.1: the b64token syntax of a bearer token.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def _absolute_url(value: str, field: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field} must be an absolute http(s) URL, got {value!r}")
    return value


class OAuthConfig(StrictModel):
    """Kong's ai-mcp-oauth2 settings (same names where Kong has the option)."""

    resource: str | None = Field(None, description="This resource's identifier, the audience tokens must carry (default: the route's "
                                                 "URL under gateway.urls or the listener's own address; docs/identity.md)")
    authorization_servers: list[str] = Field(min_length=1, description="Authorization servers listed in the Protected Resource Metadata")
    metadata_endpoint: str | None = Field(None, description="Accepted for decK compatibility; the PRM is served at the RFC 9728 location")
    scopes_supported: list[str] = Field(default_factory=list, description="Scopes listed in the Protected Resource Metadata")
    # local JWT validation
    jwks_endpoint: str | None = Field(None, description="JWKS URL: validate tokens locally as JWTs")
    jwks_cache_ttl: float = Field(300, gt=0, description="Seconds a fetched JWKS is used before it is fetched again")
    issuer: str | None = Field(None, description="Expected `iss` (default for JWTs: one of authorization_servers)")
    algorithms: list[str] = Field(default_factory=lambda: list(DEFAULT_ALGORITHMS), min_length=1,
                                  description="JWT signing algorithms accepted (asymmetric only)")
    jwt_claims_leeway: float = Field(0, ge=0, le=600, description="Seconds of clock skew tolerated on exp and nbf")
    # neither jwks_endpoint nor introspection_endpoint: found in the issuer's metadata
    discover_introspection: bool = Field(False, description="With neither endpoint set: introspect at the metadata's "
                                                            "introspection_endpoint (default: validate JWTs by its jwks_uri)")
    metadata_cache_ttl: float = Field(3600, gt=0, description="Seconds discovered metadata is used before it is fetched again")
    # introspection
    introspection_endpoint: str | None = Field(None, description="RFC 7662 introspection URL: validate tokens by asking the authorization server")
    client_id: str | None = Field(None, description="The gateway's client id at the introspection endpoint")
    client_secret: SecretValue | None = Field(None, description="The gateway's client secret (plain or a secret reference)")
    client_auth: ClientAuth = Field("client_secret_basic", description="How the gateway authenticates to the introspection endpoint")
    cache_introspection: bool = Field(True, description="Cache introspection answers (by token digest)")
    introspection_cache_ttl: float = Field(300, gt=0, description="Longest time an active answer is reused (never past the token's exp)")
    introspection_negative_cache_ttl: float = Field(5, ge=0, description="Seconds an inactive answer is reused")
    # identity mapping
    consumer_claim: ClaimPath | None = Field(None, min_length=1, description="Claim path naming the consumer, e.g. [sub]")
    consumer_by: list[ConsumerField] = Field(default_factory=lambda: ["custom_id", "username"], min_length=1,
                                             description="Consumer fields the claim is matched against, in order")
    consumer_optional: bool = Field(False, description="Accept a token that maps to no consumer")
    consumer_groups_claim: ClaimPath | None = Field(None, min_length=1, description="Claim path holding consumer group names")
    consumer_groups_optional: bool = Field(False, description="Accept a token whose groups claim names no declared consumer group")
    credential_claim: ClaimPath = Field(default_factory=lambda: ["sub"], min_length=1,
                                        description="Claim path identifying a caller that maps to no consumer")
    passthrough_credentials: bool = Field(False, description="Keep the caller's Authorization header for the upstream")
    claim_to_header: list[ClaimToHeader] = Field(default_factory=list,
                                                 description="Top-level claims sent upstream as headers")
    upstream_headers: list[UpstreamHeader] = Field(default_factory=list,
                                                   description="Claims at a path sent upstream as headers")
    token_exchange: TokenExchangeConfig | None = Field(
        None, description="RFC 8693: send the upstream a token exchanged for the caller's (docs/identity.md)")
    insecure_relaxed_audience_validation: bool = Field(False, description="Do not require the token's aud to name this resource")
    ssl_verify: bool = Field(True, description="Verify the authorization server's TLS certificate")
    timeout: float = Field(10, gt=0, description="Seconds to wait for the JWKS or introspection endpoint")

    @field_validator("authorization_servers")
    @classmethod
    def _check_servers(cls, v: list[str]) -> list[str]:
        return [_absolute_url(u, "authorization_servers") for u in v]

    @field_validator("resource", "jwks_endpoint", "introspection_endpoint")
    @classmethod
    def _check_url(cls, v: str | None, info) -> str | None:
        return None if v is None else _absolute_url(v, info.field_name)

    @field_validator("algorithms")
    @classmethod
    def _check_algorithms(cls, v: list[str]) -> list[str]:
        for alg in v:
            if alg.lower() == "none" or alg.upper().startswith("HS"):
                raise ValueError(f"{alg} is refused: tokens are verified with the authorization server's public "
                                 "keys, and an HMAC or unsigned algorithm would let a token choose how it is checked")
            if alg not in ALGORITHM_KEY_TYPES:
                raise ValueError(f"unsupported algorithm {alg!r} (supported: {', '.join(ALGORITHM_KEY_TYPES)})")
        return v

    @field_validator("consumer_claim", "consumer_groups_claim", "credential_claim")
    @classmethod
    def _check_claim_path(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not all(v):
            raise ValueError("a claim path is a list of non-empty claim names, e.g. [sub] or [realm_access, roles]")
        return v

    @field_validator("timeout")
    @classmethod
    def _check_timeout(cls, v: float) -> float:
        if v > 120:
            raise ValueError("timeout is in seconds, at most 120 (Kong's ai-mcp-oauth2 counts milliseconds)")
        return v

    @model_validator(mode="after")
    def _check_mode(self) -> "OAuthConfig":
        if self.jwks_endpoint is not None and self.introspection_endpoint is not None:
            raise ValueError("set one of jwks_endpoint (validate JWTs locally) or "
                             "introspection_endpoint (ask the authorization server), not both")
        if self.discover_introspection and (self.jwks_endpoint or self.introspection_endpoint):
            raise ValueError("discover_introspection is for a route with neither jwks_endpoint nor introspection_endpoint")
        if self.introspects and (not self.client_id or self.client_secret is None):
            raise ValueError("introspection needs client_id and client_secret (the gateway's own client)")
        if not self.introspects and (self.client_id or self.client_secret is not None):
            raise ValueError("client_id and client_secret are used only with introspection")
        check_claim_headers(self.claim_to_header, self.upstream_headers)
        te = self.token_exchange
        if te is not None and te.enabled and te.client_auth == "inherit" and not self.introspects:
            raise ValueError("token_exchange client_auth inherit takes the introspection client; with "
                             "jwks_endpoint set token_exchange client_auth, client_id and client_secret")
        return self


    @property
    def introspects(self) -> bool:
        return self.introspection_endpoint is not None or self.discover_introspection

    @property
    def discovery_issuer(self) -> str:
        return self.issuer or self.authorization_servers[0]


def _claim_text(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _claim_names(value: Any) -> list[str]:
    """Group names from a claim: a JSON list, or one string separated by spaces or commas."""
    if isinstance(value, str):
        return [g for g in re.split(r"[\s,]+", value) if g]
    if isinstance(value, list):
        return [g for g in value if isinstance(g, str) and g]
    return []


def map_identity(config: OAuthConfig, claims: dict, consumers: ConsumerIndex) -> Identity:
    """Kong's consumer and consumer-group mapping. Raises TokenRejected when a required mapping fails."""
    consumer = None
    if config.consumer_claim:
        value = _claim_text(claim_at(claims, config.consumer_claim))
        consumer = consumers.find(value, config.consumer_by) if value is not None else None
        if consumer is None and not config.consumer_optional:
            raise TokenRejected("The access token does not map to a consumer")
    groups: list[str] = []
    if config.consumer_groups_claim:
        named = _claim_names(claim_at(claims, config.consumer_groups_claim))
        groups = [g for g in dict.fromkeys(named) if g in consumers.groups]  # Kong maps existing groups only
        if not groups and not config.consumer_groups_optional:
            raise TokenRejected("The access token names no known consumer group")
    if consumer is not None:
        c = consumers.consumers[consumer]
        return Identity(consumer, c.id, c.custom_id, tuple(dict.fromkeys([*c.groups, *groups])), "oauth",
                        acl_groups=tuple(dict.fromkeys(c.acls)))
    # No consumer: Kong proceeds with a "credential" from credential_claim; it is kept as the
    # username so that audit records name the caller.
    subject = _claim_text(claim_at(claims, config.credential_claim))
    if subject is None:
        raise TokenRejected(f"The access token has no {'.'.join(config.credential_claim)} claim identifying the caller")
    if subject in consumers.subjects:
        # Without this, a token for subject "admin" would match ACL entries written for the
        # consumer "admin" although consumer_by does not map it there.
        log.warning("token subject %r is a consumer name or id that consumer_claim/consumer_by does not map; refused", subject)
        raise TokenRejected("The access token's subject collides with a consumer it does not map to")
    return Identity(subject, groups=tuple(groups), method="oauth")


@dataclass(frozen=True, slots=True)
class RouteOAuth:
    """A route's OAuth settings compiled for one policy version."""

    config: OAuthConfig
    validator: JwtValidator | Introspector
    issuers: frozenset[str] | None
    consumers: ConsumerIndex
    exchanger: Exchanger | None = None

    async def claims(self, token: str, resources: Sequence[str]) -> dict:
        """The token's claims once it is valid for this route; `resources` are the audiences accepted."""
        claims = await self.validator.claims(token)
        if isinstance(self.validator, Introspector):
            check_times(claims, self.config.jwt_claims_leeway)
            iss = claims.get("iss")
            if self.issuers is not None and iss is not None and iss not in self.issuers:
                raise TokenRejected("The access token was issued by an unexpected issuer")
        if not self.config.insecure_relaxed_audience_validation:
            check_audience(claims, resources)
        return claims


def _issuer_variants(issuers: Sequence[str]) -> frozenset[str]:
    return frozenset(v for i in issuers for v in (i, i.rstrip("/"), i.rstrip("/") + "/"))


def compile_route(config: OAuthConfig, policy: "Policy") -> RouteOAuth:
    found = None
    if config.jwks_endpoint is None and config.introspection_endpoint is None:
        found = discovery(config.discovery_issuer, config.ssl_verify, config.metadata_cache_ttl)
    if not config.introspects:
        issuers = _issuer_variants([config.issuer] if config.issuer else config.authorization_servers)
        keys = key_set(config.jwks_endpoint, config.ssl_verify) if config.jwks_endpoint else DiscoveredKeySet(found)
        validator: JwtValidator | Introspector = JwtValidator(
            keys, algorithms=config.algorithms, issuers=issuers,
            leeway=config.jwt_claims_leeway, ttl=config.jwks_cache_ttl, timeout=config.timeout)
    else:
        assert config.client_id and config.client_secret is not None
        issuers = _issuer_variants([config.issuer]) if config.issuer else None
        validator = introspector(
            config.introspection_endpoint or found, config.client_id, config.client_secret, config.client_auth,
            verify=config.ssl_verify, timeout=config.timeout, cache=config.cache_introspection,
            ttl=config.introspection_cache_ttl, inactive_ttl=config.introspection_negative_cache_ttl)
    te = config.token_exchange
    exchanger = compile_exchanger(te, config) if te is not None and te.enabled else None
    return RouteOAuth(config, validator, issuers, consumer_index(policy), exchanger)


def _compile_routes(policy: "Policy") -> dict[str, RouteOAuth]:
    return {name: compile_route(route.oauth, policy) for name, route in policy.routes.items() if route.oauth}


_routes = PerPolicy(_compile_routes)
"""Each policy version's routes with `oauth`, compiled once."""


def bearer_token(request: http.Request) -> str | None:
    """The bearer token of the Authorization header; None when there is none (RFC 6750 section 2.1)."""
    values = header_values(request.headers, "authorization")
    if len(values) > 1:
        raise TokenRejected("Send exactly one Authorization header")
    if not values:
        return None
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    if not _BEARER_TOKEN.fullmatch(token):
        raise TokenRejected("The access token is malformed")
    return token


def challenge(ctx: "FlowContext", description: str, *, invalid_token: bool) -> http.Response:
    """401 with the RFC 9728 challenge pointing at this route's Protected Resource Metadata."""
    value = bearer_challenge(resource_metadata=ctx.prm_url, error="invalid_token" if invalid_token else None,
                             description=description)
    return json_response(401, {"error": "unauthorized", "error_description": description},
                         {"WWW-Authenticate": value})


def unavailable(description: str) -> http.Response:
    return json_response(503, {"error": "temporarily_unavailable", "error_description": description},
                         {"Retry-After": "5"})


async def authenticate(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """The identity phase of a route with `oauth`: admit only a valid bearer token, set ctx.identity;
    then, at once, the token exchange and the claim headers (what the upstream gets instead of
    the caller's token), so that nothing can run between validation and the swap."""
    config = ctx.match.route.route.oauth if ctx.match is not None else None
    if config is None:
        return None
    route = _routes(ctx.snapshot.policy)[ctx.match.name]
    try:
        token = bearer_token(flow.request)
        if token is None:
            return challenge(ctx, "Missing access token", invalid_token=False)
        claims = await route.claims(token, audiences(ctx, flow, config.resource))  # never from Host
        identity = map_identity(config, claims, route.consumers)
    except TokenRejected as e:
        log.info("route %s: bearer token refused: %s", ctx.route_name, e)
        return challenge(ctx, str(e), invalid_token=True)
    except AuthServerUnavailable as e:
        log.warning("route %s: cannot validate a bearer token: %s; refusing", ctx.route_name, e)
        return unavailable("The access token could not be validated because the authorization server "
                           "is unavailable; try again later")
    ctx.identity = identity
    ctx.access_token, ctx.token_claims = token, claims
    ctx.consumed_credentials.append(("header", "authorization"))
    if not config.passthrough_credentials or route.exchanger is not None:  # exchange_token sets the upstream's
        del flow.request.headers["authorization"]
    log.debug("route %s: bearer token accepted for %s", ctx.route_name, identity.username)
    answer = await exchange_token(ctx, flow)
    return answer if answer is not None else claim_headers.add_claim_headers(ctx, flow)


async def exchange_token(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """Once authenticate has accepted the token: routes with token_exchange send the upstream an
    exchanged token. Refusals carry "token exchange" in their text (audit reason)."""
    if ctx.access_token is None or ctx.match is None or ctx.match.route.route.oauth is None:
        return None
    route = _routes(ctx.snapshot.policy)[ctx.match.name]
    if route.exchanger is None:
        return None
    return await exchange.exchange_token(ctx, flow, route.exchanger)
