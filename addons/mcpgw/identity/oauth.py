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

from mitmproxy import http

from ..headers import header_values
from ..policy.derived import PerPolicy
from ..responses import bearer_challenge, json_response
from .consumers import ConsumerIndex, Identity, consumer_index
from .introspection import Introspector, introspector
from .discovery import DiscoveredKeySet, discovery
from .jwks import JwtValidator, key_set
from .oauth_settings import OAuthConfig
from .resource import candidates as audiences
from .scopes import insufficient, missing as missing_scopes, required_sets
from .tokens import AuthServerUnavailable, TokenRejected, check_audience, check_audience_required, check_times, claim_at

if TYPE_CHECKING:
    from ..context import FlowContext
    from ..policy.models import Policy

log = logging.getLogger("mcpgw.oauth")

# RFC 6750 section 2.1: the b64token syntax of a bearer token.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


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


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def authenticated_groups(claims: dict, path: list[str] | None) -> tuple[str, ...]:
    """openid-connect's authenticated_groups_claim: a list of names, or one string as one name (a
    string is not split, so "admin dev" is one odd group, never two). A name that could split the
    X-Authenticated-Groups header is dropped."""
    if not path:
        return ()
    value = claim_at(claims, path)
    names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return tuple(dict.fromkeys(n for n in names if isinstance(n, str) and n and not _CONTROL.search(n)))


def map_identity(config: OAuthConfig, claims: dict, consumers: ConsumerIndex) -> Identity:
    """Kong's consumer and consumer-group mapping. Raises TokenRejected when a required mapping fails."""
    authenticated = authenticated_groups(claims, config.authenticated_groups_claim)
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
                        acl_groups=tuple(dict.fromkeys(c.acls)), authenticated_groups=authenticated)
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
    return Identity(subject, groups=tuple(groups), method="oauth", authenticated_groups=authenticated)


@dataclass(frozen=True, slots=True)
class RouteOAuth:
    """A route's OAuth settings compiled for one policy version."""

    config: OAuthConfig
    validator: JwtValidator | Introspector
    issuers: frozenset[str] | None
    consumers: ConsumerIndex
    scopes: tuple[frozenset[str], ...] = ()  # scopes_required: any one set, wholly granted
    groups: tuple[frozenset[str], ...] = ()  # groups_required, the same rule
    roles: tuple[frozenset[str], ...] = ()  # roles_required, the same rule
    audiences: tuple[frozenset[str], ...] = ()  # audience_required, the same rule, in place of the resource

    async def claims(self, token: str, resources: Sequence[str]) -> dict:
        """The token's claims once it is valid for this route; `resources` are the audiences accepted."""
        claims = await self.validator.claims(token)
        if isinstance(self.validator, Introspector):
            check_times(claims, self.config.jwt_claims_leeway)
            iss = claims.get("iss")
            if self.issuers is not None and iss is not None and iss not in self.issuers:
                raise TokenRejected("The access token was issued by an unexpected issuer")
        if self.audiences:
            check_audience_required(claims, self.audiences, self.config.audience_claim)
        elif not self.config.insecure_relaxed_audience_validation:
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
    return RouteOAuth(config, validator, issuers, consumer_index(policy), required_sets(config.scopes_required),
                      required_sets(config.groups_required), required_sets(config.roles_required),
                      required_sets(config.audience_required))


def _compile_routes(policy: "Policy") -> dict[str, RouteOAuth]:
    return {name: compile_route(route.oauth, policy) for name, route in policy.routes.items() if route.oauth}


_routes = PerPolicy(_compile_routes)
"""Each policy version's routes with `oauth`, compiled once."""


def required(ctx: "FlowContext", route: RouteOAuth, claims: dict) -> http.Response | None:
    """openid-connect's scopes_required, groups_required and roles_required, checked in turn."""
    config = route.config
    if missing_scopes(claims, route.scopes, tuple(config.scopes_claim)):
        log.info("route %s: bearer token refused: scopes_required not granted", ctx.route_name)
        return insufficient(ctx, config.scopes_required[0])
    if missing_scopes(claims, route.groups, tuple(config.groups_claim)):
        log.info("route %s: bearer token refused: groups_required not granted", ctx.route_name)
        return insufficient(ctx, None, "groups")
    if missing_scopes(claims, route.roles, tuple(config.roles_claim)):
        log.info("route %s: bearer token refused: roles_required not granted", ctx.route_name)
        return insufficient(ctx, None, "roles")
    return None


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
    """The identity phase of a route with `oauth`: admit only a valid bearer token, set ctx.identity
    and keep the token and its claims on the flow context for the claim headers and the token
    exchange, phases of their own (identity/claim_headers.py, identity/exchange.py)."""
    config = ctx.match.route.route.oauth if ctx.match is not None else None
    if config is None:
        return None
    route = _routes(ctx.snapshot.policy)[ctx.match.name]
    try:
        token = bearer_token(flow.request)
        if token is None:
            return challenge(ctx, "Missing access token", invalid_token=False)
        claims = await route.claims(token, audiences(ctx, flow, config.resource))  # never from Host
        if (refused := required(ctx, route, claims)) is not None:
            return refused
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
    exchanges = config.token_exchange is not None and config.token_exchange.enabled
    if not config.passthrough_credentials or exchanges:  # exchange.exchange_token sets the upstream's
        del flow.request.headers["authorization"]
    log.debug("route %s: bearer token accepted for %s", ctx.route_name, identity.username)
    return None

