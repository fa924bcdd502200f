"""A route's OAuth discovery settings (RFC 9728 protected resource metadata; applied in prm.py)."""

from __future__ import annotations

import json
from typing import Any, Literal, Protocol

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..policy.base import StrictModel, http_url


_CORE_FIELDS = ("resource", "authorization_servers", "scopes_supported", "bearer_methods_supported")


def _absolute_url(value: str, what: str) -> str:
    if http_url(value, what).fragment:
        raise ValueError(f"{what} must not have a fragment: {value!r}")
    return value


class PrmConfig(StrictModel):
    """A route's OAuth discovery settings."""

    challenge: bool = Field(False, description="Answer MCP requests without an Authorization header with 401 and "
                                               "a WWW-Authenticate pointing at this route's PRM")
    mode: Literal["rewrite", "serve"] = Field("rewrite", description="rewrite: the upstream's PRM with `resource` "
                                              "replaced; serve: a PRM built from these settings")
    upstream_url: str | None = Field(None, description="rewrite: where the upstream's PRM is (default: "
                                     "<service origin>/.well-known/oauth-protected-resource<service path>)")
    resource: str | None = Field(None, description="The `resource` clients see (default: the route's URL under "
                                 "gateway.urls or the listener's own address; docs/identity.md)")
    authorization_servers: list[str] = Field(default_factory=list, description="serve: authorization server issuer URLs")
    scopes_supported: list[str] | None = Field(None, description="serve: scopes listed in the document")
    bearer_methods_supported: list[Literal["header", "body", "query"]] = Field(
        default_factory=lambda: ["header"], description="serve: how a bearer token may be sent")
    metadata: dict[str, Any] = Field(default_factory=dict, description="serve: further RFC 9728 fields, e.g. resource_name")

    @field_validator("upstream_url", "resource")
    @classmethod
    def _check_url(cls, v: str | None, info: ValidationInfo) -> str | None:
        return None if v is None else _absolute_url(v, info.field_name)

    @field_validator("authorization_servers")
    @classmethod
    def _check_servers(cls, v: list[str]) -> list[str]:
        return [_absolute_url(u, "authorization_servers") for u in v]

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, v: dict[str, Any]) -> dict[str, Any]:
        if clash := [k for k in v if k in _CORE_FIELDS]:
            raise ValueError(f"set {', '.join(clash)} with the field of that name, not under metadata")
        try:
            json.dumps(v)
        except (TypeError, ValueError) as e:
            raise ValueError(f"metadata must be plain JSON values: {e}") from None
        return v

    @model_validator(mode="after")
    def _fields_fit_mode(self) -> "PrmConfig":
        serve_only = {"authorization_servers", "scopes_supported", "bearer_methods_supported", "metadata"}
        wrong = (self.model_fields_set & serve_only) if self.mode == "rewrite" else (self.model_fields_set & {"upstream_url"})
        if wrong:
            raise ValueError(f"{', '.join(sorted(wrong))} cannot be used with mode: {self.mode}")
        return self


class _Route(Protocol):
    """What this module reads of a policy Route (typed here so it needs no policy import)."""

    prm: PrmConfig | None
    oauth: Any


def effective_config(route: _Route) -> PrmConfig | None:
    """The route's `prm`, filled in from its `oauth` settings where it leaves something out. A
    route with `oauth` and no `prm` serves the document of its oauth settings."""
    oauth = getattr(route, "oauth", None)
    config = route.prm
    if oauth is None or (config is not None and config.mode == "rewrite"):
        return config
    if config is None:
        config = PrmConfig(mode="serve")
    updates = {}
    if config.resource is None and getattr(oauth, "resource", None):
        updates["resource"] = oauth.resource
    if not config.authorization_servers:
        updates["authorization_servers"] = list(getattr(oauth, "authorization_servers", None) or [])
    if config.scopes_supported is None and getattr(oauth, "scopes_supported", None):
        updates["scopes_supported"] = list(oauth.scopes_supported)
    return config.model_copy(update=updates)


def check_discovery(route_name: str, route: _Route) -> None:
    """At policy load: a served document must name an authorization server (the MCP
    authorization spec requires one)."""
    config = effective_config(route)
    if config is not None and config.mode == "serve" and not config.authorization_servers:
        raise ValueError(f"route {route_name!r}: prm mode serve needs authorization_servers "
                         "(or an oauth setting on the route that has them)")
