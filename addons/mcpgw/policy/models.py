"""The native policy format. Each concern's own settings model lives beside its handler and is
referenced here, so a route reads as the list of what applies to it."""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..ai.settings import AiSettings, check_route as check_ai
from ..audit_settings import AuditSettings
from ..telemetry.settings import RouteTelemetry
from ..credentials_settings import CredentialsConfig, check_route as check_credentials
from ..governance.access_settings import RouteAccess, check_groups as check_access_groups
from ..governance.acl_settings import AclSettings, check_claim_source
from ..cors_settings import CorsConfig
from ..identity.consumer_settings import Consumer, ConsumerGroup, groups_validator, normalize_groups
from ..identity.keyauth_settings import KeyAuthConfig, check_anonymous
from ..identity.oauth_settings import OAuthConfig
from ..identity.prm_settings import PrmConfig, check_discovery
from ..identity.upstream_header_settings import IdentityHeaderSetting
from ..integrity.settings import IntegritySettings
from ..rest_tools.catalog import check_policy as check_rest_tools
from ..rest_tools.settings import RestToolsSettings
from ..upstream_proxy.settings import ProxySettings, check_policy as check_upstream_proxy
from ..request_validator.settings import RequestValidatorSettings
from ..limits.settings import RouteLimits, check_route as check_limits
from ..transform_settings import RequestTransform
from ..sessions.settings import SessionSettings
from ..state.settings import StateSettings
from .base import ByteSize, StrictModel, http_url


class Service(StrictModel):
    """An upstream MCP server."""

    url: str = Field(description="Upstream base URL, e.g. https://api.githubcopilot.com/mcp")

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        parts = http_url(v, "a service URL")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("URL must not carry a query, fragment or credentials (use credentials: for secrets)")
        try:
            parts.port
        except ValueError as e:
            raise ValueError(f"bad port in {v!r}") from e
        return v.rstrip("/") if parts.path not in ("", "/") else f"{parts.scheme}://{parts.netloc}"

    # Parsed once per policy version: forwarding reads these on every request.
    @cached_property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @cached_property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @cached_property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @cached_property
    def path(self) -> str:
        return urlsplit(self.url).path.rstrip("/")

    @cached_property
    def authority(self) -> str:
        """Host[:port] as a Host header names this upstream (port only when not the default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.scheme == "https" else 80) else f"{host}:{self.port}"


class Route(StrictModel):
    """A path (gateway mode) or upstream URL (intercept mode) and everything applied to its traffic."""

    service: str = Field(description="Name of the service this route forwards to")
    paths: list[str] = Field(min_length=1, description="Path prefixes matched in gateway mode")
    strip_path: bool = Field(True, description="Remove the matched prefix before appending to the service path (Kong semantics)")
    methods: list[str] | None = Field(None, description="HTTP methods accepted (default: all)")
    cors: CorsConfig | None = None
    key_auth: KeyAuthConfig | None = Field(None, description="Identify the consumer by an API key (docs/identity.md)")
    prm: PrmConfig | None = Field(None, description="OAuth discovery: PRM challenge, rewrite or serve (docs/identity.md)")
    upstream_identity_headers: IdentityHeaderSetting = Field(
        False, description="Send the caller's identity upstream as X-Consumer-* headers: true for all, or the names to send")
    telemetry: RouteTelemetry | None = Field(None, description="Where this route's traffic is also reported: Kong-shaped file and HTTP logs, OTLP (docs/telemetry.md)")
    oauth: OAuthConfig | None = Field(None, description="OAuth 2 resource server: require a valid bearer token (docs/identity.md)")
    access: RouteAccess | None = Field(None, description="Which consumer groups may use the route at all (Kong's acl plugin; docs/governance.md)")
    acl: AclSettings | None = Field(None, description="Tool governance: per-consumer ACLs on tools, prompts and resources (docs/governance.md)")
    audit: AuditSettings | None = Field(None, description="Audit log settings of this route, e.g. log_payloads (docs/observability.md)")
    credentials: CredentialsConfig | None = Field(None, description="Upstream credential: passthrough (default) or inject a stored one (docs/credentials.md)")
    request_transform: RequestTransform | None = Field(None, description="Header and query string operations on every request (Kong's request-transformer; docs/policy.md)")
    ai: AiSettings | None = Field(None, description="An LLM route: the service is an OpenAI-compatible provider (Kong's ai-proxy; docs/ai.md)")
    rate_limits: RouteLimits | None = Field(None, description="Request rate limits per consumer, group, method and tool (Kong's rate-limiting-advanced; docs/limits.md)")
    integrity: IntegritySettings | None = Field(None, description="Tool integrity: pin tool definitions against rug pulls (docs/integrity.md)")
    rest_tools: RestToolsSettings | None = Field(None, description="REST operations as MCP tools the gateway serves itself (Kong's conversion and listener modes; docs/rest-tools.md)")
    upstream_proxy: ProxySettings | None = Field(None, description="Forward proxy toward the service: forwarded requests and REST tool calls (Kong's proxy_config; docs/rest-tools.md)")
    request_validator: RequestValidatorSettings | None = Field(None, description="Content type, query and header parameters and body checked before anything else judges the request (Kong's request-validator; docs/kong.md)")

    @field_validator("paths")
    @classmethod
    def _check_paths(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p.startswith("/"):
                raise ValueError(f"a route path must start with '/', got {p!r}")
            if "?" in p or "#" in p:
                raise ValueError(f"a route path is a plain prefix, without query or fragment: {p!r}")
        return v

    @field_validator("methods")
    @classmethod
    def _upper_methods(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [m.upper() for m in v]


class GatewaySettings(StrictModel):
    """How the gateway itself is reached and what it accepts."""

    urls: list[str] = Field(default_factory=list, description="Public base URLs of the gateway; their hosts are accepted public hosts")
    hosts: list[str] = Field(default_factory=list, description="Extra Host names accepted in gateway mode (loopback names always are)")
    origins: list[str] = Field(default_factory=list, description="Browser origins accepted on every route, e.g. https://app.example.com")
    intercept_unmatched: Literal["pass", "block"] = Field("pass", description="Intercept mode: what to do with traffic no route governs")
    debug_headers: bool = Field(False, description="Add X-MCP-Gateway-Policy (version and digest) and X-MCP-Gateway-Route to responses")
    max_body_size: ByteSize = Field(1024 * 1024, gt=0, description="Largest request body accepted on a governed route")
    env_file: str | None = Field(None, description="dotenv file (NAME=value) read for {env://NAME} before the process environment; "
                                                   "watched, so rewriting it rotates secrets (docs/credentials.md)")
    secret_refresh: float | None = Field(None, gt=0, description="Seconds between re-resolutions of every secret reference, "
                                                                 "even when no watched file changed")
    sessions: SessionSettings = Field(default_factory=SessionSettings,
                                      description="Session binding: how long an idle session stays bound to its caller (docs/policy.md)")
    state: StateSettings = Field(default_factory=StateSettings,
                                 description="Where state shared by several gateway processes lives: memory or Redis (docs/scaling.md)")

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, v: list[str]) -> list[str]:
        for u in v:
            http_url(u, "a gateway URL")
        return [u.rstrip("/") for u in v]

    @field_validator("hosts")
    @classmethod
    def _lower_hosts(cls, v: list[str]) -> list[str]:
        return [h.lower().strip("[]") for h in v]


class Policy(StrictModel):
    """The whole policy file."""

    version: Literal[1] = Field(1, description="Policy format version")
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    consumer_groups: dict[str, ConsumerGroup] = Field(default_factory=dict)
    consumers: dict[str, Consumer] = Field(default_factory=dict, description="Consumers by username")
    services: dict[str, Service] = Field(min_length=1)
    routes: dict[str, Route] = Field(min_length=1)

    @field_validator("consumer_groups", mode="before")
    @classmethod
    def _groups_as_mapping(cls, v):
        return normalize_groups(v)

    @model_validator(mode="before")
    @classmethod
    def _read_env_file(cls, data: Any, info: ValidationInfo) -> Any:
        # Before any field is validated: secret references anywhere may name its variables.
        gateway = data.get("gateway") if isinstance(data, dict) else None
        resolver = (info.context or {}).get("secrets")
        if isinstance(gateway, dict) and isinstance(gateway.get("env_file"), str) and resolver is not None:
            resolver.load_env_file(gateway["env_file"])
        return data

    @model_validator(mode="after")
    def _check_references(self) -> "Policy":
        groups_validator(self.consumer_groups, self.consumers)
        seen: dict[str, str] = {}
        for name, route in self.routes.items():
            if route.service not in self.services:
                known = ", ".join(sorted(self.services)) or "none"
                raise ValueError(f"route {name!r} names service {route.service!r}, which is not defined (services: {known})")
            check_anonymous(name, route.key_auth, self.consumers)
            check_discovery(name, route)
            check_access_groups(name, route.access, self.consumer_groups,
                                frozenset(a for c in self.consumers.values() for a in c.acls),
                                route.oauth is not None and route.oauth.authenticated_groups_claim is not None)
            check_claim_source(name, route.acl, route.oauth is not None)
            check_credentials(name, route, self.consumer_groups)
            check_ai(name, route.ai, self.consumer_groups)
            check_limits(name, route.rate_limits, self.consumer_groups, self.gateway.state, self.consumers)
            for p in route.paths:
                if p in seen:
                    raise ValueError(f"path {p!r} is claimed by both route {seen[p]!r} and route {name!r}")
                seen[p] = name
        check_rest_tools(self)  # after the routes' own checks: listeners gather tools across routes
        check_upstream_proxy(self)
        return self
