"""Settings of a route's OAuth resource server (Kong's ai-mcp-oauth2 `config`, same names where
Kong has the option, and openid-connect's `scopes_required`, `groups_required`, `roles_required`,
`audience_required`, `audience_claim` and `authenticated_groups_claim`). Only the policy's
foundation and other settings modules here: the phase is oauth.py."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..policy.base import StrictModel, http_url
from ..policy.secrets import SecretValue
from .claim_settings import ClaimToHeader, UpstreamHeader, check_settings as check_claim_headers
from .consumer_settings import ConsumerField
from .exchange_settings import TokenExchangeConfig

ClaimPath = list[str]
ClientAuth = Literal["client_secret_basic", "client_secret_post"]

# alg -> (JWK kty, curve or None): which keys may verify which algorithm.
ALGORITHM_KEY_TYPES: dict[str, tuple[str, str | None]] = {
    **{f"RS{n}": ("RSA", None) for n in (256, 384, 512)},
    **{f"PS{n}": ("RSA", None) for n in (256, 384, 512)},
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
}
DEFAULT_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]

_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 section 3.3: safe inside a quoted string


def check_scopes(entries: list[str]) -> list[str]:
    """The settings validator: each entry names at least one scope, each a valid scope token."""
    for entry in entries:
        names = entry.split()
        if not names or not all(_SCOPE_TOKEN.fullmatch(n) for n in names):
            raise ValueError(f"scopes_required entry {entry!r} is not a space-separated list of scopes")
    return entries


def _absolute_url(value: str, field: str) -> str:
    http_url(value, field)
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
    scopes_required: list[str] = Field(default_factory=list, description="openid-connect's: each entry a space-separated "
                                       "set of scopes all required; any one entry suffices (none: no check)")
    scopes_claim: ClaimPath = Field(default_factory=lambda: ["scope"], min_length=1,
                                    description="Claim path of the token's granted scopes (a space-separated string or a list)")
    groups_required: list[str] = Field(default_factory=list, description="openid-connect's: as scopes_required, "
                                       "for the groups in groups_claim")
    groups_claim: ClaimPath = Field(default_factory=lambda: ["groups"], min_length=1,
                                    description="Claim path of the token's groups for groups_required")
    roles_required: list[str] = Field(default_factory=list, description="openid-connect's: as scopes_required, "
                                      "for the roles in roles_claim")
    roles_claim: ClaimPath = Field(default_factory=lambda: ["roles"], min_length=1,
                                   description="Claim path of the token's roles for roles_required")
    authenticated_groups_claim: ClaimPath | None = Field(
        None, min_length=1, description="openid-connect's: claim path of groups the route's access (acl) matches as "
        "authenticated groups (a list of names, or one name); docs/oauth.md")
    passthrough_credentials: bool = Field(False, description="Keep the caller's Authorization header for the upstream")
    claim_to_header: list[ClaimToHeader] = Field(default_factory=list,
                                                 description="Top-level claims sent upstream as headers")
    upstream_headers: list[UpstreamHeader] = Field(default_factory=list,
                                                   description="Claims at a path sent upstream as headers")
    token_exchange: TokenExchangeConfig | None = Field(
        None, description="RFC 8693: send the upstream a token exchanged for the caller's (docs/identity.md)")
    audience_required: list[str] = Field(default_factory=list, description="openid-connect's: audiences the token must "
                                         "carry in audience_claim, each entry a space-separated set all required, any one "
                                         "entry suffices; replaces the check that aud names this resource (docs/oauth.md)")
    audience_claim: ClaimPath = Field(default_factory=lambda: ["aud"], min_length=1,
                                      description="openid-connect's: claim path of the audiences audience_required reads")
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

    @field_validator("scopes_required")
    @classmethod
    def _check_scopes(cls, v: list[str]) -> list[str]:
        return check_scopes(v)

    @field_validator("groups_required", "roles_required", "audience_required")
    @classmethod
    def _check_names(cls, v: list[str], info) -> list[str]:
        if not all(entry.split() for entry in v):
            raise ValueError(f"an empty {info.field_name} entry would require nothing")
        return v

    @field_validator("consumer_claim", "consumer_groups_claim", "credential_claim", "scopes_claim", "groups_claim",
                     "roles_claim", "authenticated_groups_claim", "audience_claim")
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
        if self.audience_required and self.insecure_relaxed_audience_validation:
            raise ValueError("audience_required checks the token's audience; insecure_relaxed_audience_validation "
                             "turns audience checks off: set one")
        if self.audience_claim != ["aud"] and not self.audience_required:
            raise ValueError("audience_claim says where audience_required looks for the audience; without "
                             "audience_required the token's aud must name this resource")
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
