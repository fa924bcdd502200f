"""The ACL settings of a route, in Kong ai-mcp-proxy's names and semantics (compiled in acl.py).

A primitive's own `acl` replaces the `default_acl` of its scope entirely; a primitive without an
entry (or whose entry has no `acl`) falls under the `default_acl`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..policy.base import ByteSize, StrictModel


Scope = Literal["tools", "prompts", "resources"]


class AclLists(StrictModel):
    """Who may use a primitive. `deny` wins over `allow`; an `allow` list (even an empty one)
    admits only the subjects on it; with neither list everyone is admitted."""

    allow: list[str] | None = Field(None, description="Subjects allowed: consumer (see consumer_identifier) or consumer group names")
    deny: list[str] | None = Field(None, description="Subjects denied; takes precedence over allow")

    @field_validator("allow", "deny")
    @classmethod
    def _non_empty_subjects(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and any(not s for s in v):
            raise ValueError("a subject must not be empty")
        return v


class DefaultAcl(AclLists):
    """The ACL of every primitive of `scope` that has no ACL of its own."""

    scope: Scope = Field("tools", description="Which primitives this default applies to (Kong's default: tools)")


class ToolAcl(StrictModel):
    name: str = Field(min_length=1, description="The tool's name, exactly as the upstream lists it")
    description: str | None = None
    acl: AclLists | None = Field(None, description="Replaces default_acl for this tool; without it the default applies")


class PromptAcl(StrictModel):
    name: str = Field(min_length=1, description="The prompt's name, exactly as the upstream lists it")
    description: str | None = None
    acl: AclLists | None = None


class ResourceAcl(StrictModel):
    uri: str = Field(min_length=1, description="A resource URI, or a pattern where '*' matches any characters")
    description: str | None = None
    acl: AclLists | None = None


class AclSettings(StrictModel):
    """Tool governance of one route."""

    default_acl: list[DefaultAcl] = Field(default_factory=list, description="One default per scope")
    tools: list[ToolAcl] = Field(default_factory=list)
    prompts: list[PromptAcl] = Field(default_factory=list)
    resources: list[ResourceAcl] = Field(default_factory=list)
    consumer_identifier: Literal["username", "consumer_id", "custom_id"] = Field(
        "username", description="Which consumer field the subjects in ACL lists name")
    include_consumer_groups: bool = Field(False, description="Let consumer group names match subjects (Kong's default: false)")
    acl_attribute_type: Literal["consumer", "oauth_access_token"] = Field(
        "consumer", description="consumer: subjects are the consumer (and groups); oauth_access_token: the values of "
                                "access_token_claim_field in the route's validated OAuth token, no consumer needed")
    access_token_claim_field: str | None = Field(
        None, description="With oauth_access_token: the claim whose value (a string or a list of strings) names the "
                          "subjects, as Kong writes it: .user.email, or a top-level name")
    deny_response: Literal["jsonrpc", "http403"] = Field(
        "jsonrpc", description="jsonrpc: JSON-RPC error -32602 (HTTP 200); http403: HTTP 403 with WWW-Authenticate insufficient_scope")
    shadow: bool = Field(False, description="Evaluate and record, but forward denied calls and unfiltered lists")
    refuse_without_tools: bool = Field(
        False, description="Refuse every request of a caller no tool is allowed to, initialize included, as Kong's "
                           "ai-mcp-proxy does (docs/governance.md); otherwise such a caller sees an empty tool list")
    max_request_body_size: ByteSize | None = Field(
        None, gt=0, description="Largest request body on this route (at most gateway.max_body_size, which applies first)")

    @field_validator("consumer_identifier", mode="before")
    @classmethod
    def _id_alias(cls, v: object) -> object:
        return "consumer_id" if v == "id" else v

    @field_validator("access_token_claim_field")
    @classmethod
    def _claim_path(cls, v: str | None) -> str | None:
        if v is not None and not all(v.removeprefix(".").split(".")):
            raise ValueError(f"access_token_claim_field {v!r} is not a claim path (e.g. .user.email or groups)")
        return v

    @model_validator(mode="after")
    def _claim_field_with_type(self) -> "AclSettings":
        if (self.acl_attribute_type == "oauth_access_token") != (self.access_token_claim_field is not None):
            raise ValueError("acl_attribute_type: oauth_access_token goes with access_token_claim_field (and only with it)")
        return self

    @model_validator(mode="after")
    def _no_duplicates(self) -> "AclSettings":
        scopes = [d.scope for d in self.default_acl]
        for scope in set(scopes):
            if scopes.count(scope) > 1:
                raise ValueError(f"default_acl has more than one entry for scope {scope!r}")
        for kind, keys in (("tools", [t.name for t in self.tools]), ("prompts", [p.name for p in self.prompts]),
                           ("resources", [r.uri for r in self.resources])):
            dupes = sorted({k for k in keys if keys.count(k) > 1})
            if dupes:
                raise ValueError(f"{kind} lists {', '.join(map(repr, dupes))} more than once")
        return self


def check_claim_source(route_name: str, acl: AclSettings | None, validates_tokens: bool) -> None:
    """An ACL on a token claim needs the route to validate the token (its `oauth`): without one there
    is no claim to read, only whatever the client sent. Kong's pages do not say what its
    ai-mcp-proxy does then (a decK converter writes such a route: case 22), so it is refused at
    load rather than left to deny or admit at run time."""
    if acl is not None and acl.acl_attribute_type == "oauth_access_token" and not validates_tokens:
        raise ValueError(
            f"route {route_name!r}: acl_attribute_type oauth_access_token matches the claim "
            f"{acl.access_token_claim_field} of the token the route's oauth validates, and this route validates no "
            "token; add oauth (in a decK file: ai-mcp-oauth2 or openid-connect on the route) or use "
            "acl_attribute_type consumer with an authentication plugin")
