"""Credential mediation: which credential the upstream receives.

- `passthrough` (default): the client's own credential goes upstream as sent (e.g. a GitHub
  token). Only `Proxy-Authorization`, which is always meant for a proxy, is removed; the
  gateway's own key is removed by key-auth's `hide_credentials`.
- `inject` (token swap): once the caller is authenticated, every credential the gateway
  consumed (API key, bearer token), any `Authorization`, `Proxy-Authorization` and `Cookie`,
  and every key name of the route's key-auth are removed, then header and query operations set
  the stored credential, e.g. `add: {headers: ["Authorization:Bearer {env://TOKEN}"]}`.

The operations are Kong's request-transformer-advanced ones, applied in its order: remove,
rename, replace (only when present), add (only when absent), append. Each takes Kong's list of
"name:value" strings or a mapping name -> value. `overrides` give consumers or consumer groups
other operations (see `CredentialsConfig`).

A stored credential only ever goes to its route's upstream origin: intercept-mode requests for
another origin are refused before anything is injected, and `check_destination` verifies the
final target after `forwarding.forward`, in both modes."""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mitmproxy import http
from pydantic import Field, field_validator, model_validator

from . import headers as header_fields
from . import redaction
from .identity.keyauth import remove_key
from .policy.base import StrictModel
from .policy.derived import PerPolicy
from .policy.secrets import Secret, SecretText, SecretTextValue
from .responses import json_response

if TYPE_CHECKING:
    from .context import FlowContext
    from .identity.consumers import Identity
    from .policy.models import Policy, Route

log = logging.getLogger("mcpgw.credentials")

CLIENT_CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # an HTTP token (RFC 9110)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KONG_ENTRY = re.compile(r"^([^:]+):*(.*)$", re.S)  # Kong's "name:value" split: the first colon(s) separate


def _entries(value: Any, *, values: bool) -> Any:
    """Kong's list of "name:value" strings (or plain names for `remove`), or a mapping
    name -> value (a list of values repeats the name). Returns (name, value) pairs or names."""
    if isinstance(value, dict):
        if not values:
            raise ValueError("remove takes a list of names")
        return [(name, _text(v)) for name, vs in value.items() for v in (vs if isinstance(vs, list) else [vs])]
    if not isinstance(value, list):
        return value
    entries = []
    for position, entry in enumerate(value):
        if not isinstance(entry, str):
            entries.append(entry)
            continue
        m = _KONG_ENTRY.match(entry)
        if m is None:
            raise ValueError(f"entry {position} has no name; write it as 'Name:value'")
        name, text = m[1].strip(), m[2].strip()
        if not values:
            entries.append(name)
        elif not text:  # the message must not quote the entry: it may hold a secret
            raise ValueError(f"entry {position} ({name!r}) has no value; write it as 'Name:value'")
        else:
            entries.append((name, text))
    return entries


def _text(value: Any) -> Any:
    """YAML reads `api_version: 2` as a number; Kong's strings never are."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _check_name(name: str, where: str) -> str:
    if where == "headers" and not _HEADER_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid header name")
    if where == "querystring" and (not name or any(c in name for c in "&=#")):
        raise ValueError(f"{name!r} is not a valid query parameter name")
    if where == "headers" and name.lower() == "host":
        raise ValueError("Host cannot be set: the upstream is always the route's service")
    return name


class RemoveOperation(StrictModel):
    headers: list[str] = Field(default_factory=list, description="Header names to remove")
    querystring: list[str] = Field(default_factory=list, description="Query parameter names to remove")

    @field_validator("headers", "querystring", mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        return _entries(v, values=False)

    @field_validator("headers", "querystring")
    @classmethod
    def _check(cls, v: list[str], info) -> list[str]:
        return [_check_name(name, info.field_name) for name in v]


class RenameOperation(StrictModel):
    headers: list[tuple[str, str]] = Field(default_factory=list, description='"old:new" header renames')
    querystring: list[tuple[str, str]] = Field(default_factory=list, description='"old:new" query parameter renames')

    @field_validator("headers", "querystring", mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        return _entries(v, values=True)

    @field_validator("headers", "querystring")
    @classmethod
    def _check(cls, v: list[tuple[str, str]], info) -> list[tuple[str, str]]:
        for old, new in v:
            _check_name(old, info.field_name)
            _check_name(new, info.field_name)
            same = old.lower() == new.lower() if info.field_name == "headers" else old == new  # header names ignore case
            if same:
                raise ValueError(f"{old!r} is renamed to itself")
        return v


class SetOperation(StrictModel):
    """`replace`, `add` or `append`: values may embed secret references."""

    headers: list[tuple[str, SecretTextValue]] = Field(default_factory=list, description='"Name:value" headers')
    querystring: list[tuple[str, SecretTextValue]] = Field(default_factory=list, description='"name:value" query parameters')

    @field_validator("headers", "querystring", mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        return _entries(v, values=True)

    @field_validator("headers", "querystring")
    @classmethod
    def _check(cls, v: list[tuple[str, SecretText]], info) -> list[tuple[str, Secret]]:
        checked: list[tuple[str, Secret]] = []
        for name, value in v:
            _check_name(name, info.field_name)
            if "$(" in (value.reference or value.reveal()):
                raise ValueError(f"{name}: Kong templates $(...) are not supported; use a secret reference "
                                 "such as {env://NAME}")
            if _CONTROL.search(value.reveal()):
                raise ValueError(f"{name}: the value contains a control character (a line break in a secret?)")
            if not value.parts and redaction.CREDENTIAL_NAME.search(name):
                value = Secret(value.reveal())  # a credential written inline: mask it like a reference
            checked.append((name, value))
        return checked


class Operations(StrictModel):
    """Kong request-transformer-advanced operations, applied in this order."""

    remove: RemoveOperation = Field(default_factory=RemoveOperation)
    rename: RenameOperation = Field(default_factory=RenameOperation)
    replace: SetOperation = Field(default_factory=SetOperation, description="Set only names already present")
    add: SetOperation = Field(default_factory=SetOperation, description="Set only names not present")
    append: SetOperation = Field(default_factory=SetOperation, description="Add a value, keeping existing ones")

    def has_operations(self) -> bool:
        return any(getattr(self, op) != type(getattr(self, op))() for op in Operations.model_fields)


class CredentialOverride(Operations):
    """Operations for some consumers or consumer groups, used instead of the route's."""

    consumers: list[str] = Field(default_factory=list, description="Consumer usernames, ids or custom_ids")
    groups: list[str] = Field(default_factory=list, description="Consumer group names")

    @model_validator(mode="after")
    def _names_someone(self) -> "CredentialOverride":
        if not self.consumers and not self.groups:
            raise ValueError("an override needs consumers or groups")
        return self


class CredentialsConfig(Operations):
    """A route's upstream credential.

    Overrides: one that names the caller in `consumers` (username, id or custom_id) wins over
    one that matches only through `groups`, as a consumer-scoped Kong plugin wins over a
    consumer-group-scoped one; among equals, the first in file order wins. An override's
    operations replace the route's entirely (no merging)."""

    mode: Literal["passthrough", "inject"] = Field("passthrough", description="passthrough: the client's credential goes "
                                                   "upstream; inject: it is swapped for a stored one")
    allow_anonymous: bool = Field(False, description="inject mode: also inject for callers that are not authenticated "
                                                     "(no identity, or key-auth's anonymous consumer)")
    overrides: list[CredentialOverride] = Field(default_factory=list, description="Other operations for some consumers "
                                                "or groups; consumer matches first, then file order")

    @model_validator(mode="after")
    def _inject_only(self) -> "CredentialsConfig":
        if self.mode == "passthrough" and (self.has_operations() or self.overrides or self.allow_anonymous):
            raise ValueError("operations, overrides and allow_anonymous apply only with mode: inject")
        return self


def check_route(route_name: str, route: "Route", groups: Collection[str]) -> None:
    """At policy load: overrides name declared groups, and an inject route authenticates its
    callers or says it need not. (Override consumers may be IdP subjects, so they are not checked.)"""
    config = route.credentials
    if config is None:
        return
    for i, override in enumerate(config.overrides):
        if unknown := [g for g in override.groups if g not in groups]:
            raise ValueError(f"route {route_name!r}: credentials.overrides[{i}] names undeclared consumer group(s) "
                             f"{', '.join(map(repr, unknown))}")
    if config.mode != "inject" or config.allow_anonymous:
        return
    if route.key_auth is None and route.oauth is None:
        raise ValueError(f"route {route_name!r}: credentials mode inject sends a stored credential for the caller; "
                         "add key_auth or oauth to identify callers, or set credentials.allow_anonymous: true")


# -- compiled per policy version -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """One set of operations with their values resolved, and what it is called in logs."""

    label: str
    ops: Operations

    def apply(self, request: http.Request) -> None:
        headers, ops = request.headers, self.ops
        for name in ops.remove.headers:
            if name in headers:
                del headers[name]
        for old, new in ops.rename.headers:
            if old in headers:
                values = headers.get_all(old)
                del headers[old]
                headers.set_all(new, values)
        for name, value in ops.replace.headers:
            if name in headers:
                headers[name] = value.reveal()
        for name, value in ops.add.headers:
            if name not in headers:
                headers[name] = value.reveal()
        for name, value in ops.append.headers:
            headers.add(name, value.reveal())
        if any(getattr(ops, op).querystring for op in Operations.model_fields):
            self._apply_query(request)

    def _apply_query(self, request: http.Request) -> None:
        query, ops = request.query, self.ops
        for name in ops.remove.querystring:
            query.set_all(name, [])
        for old, new in ops.rename.querystring:
            values = query.get_all(old)  # Kong renames unconditionally: an absent old name removes the new one
            query.set_all(old, [])
            query.set_all(new, values)
        for name, value in ops.replace.querystring:
            if name in query:
                query.set_all(name, [value.reveal()])
        for name, value in ops.add.querystring:
            if name not in query:
                query.set_all(name, [value.reveal()])
        for name, value in ops.append.querystring:
            query.add(name, value.reveal())


@dataclass(frozen=True, slots=True)
class RouteCredentials:
    config: CredentialsConfig
    default: Plan
    overrides: tuple[tuple[frozenset[str], frozenset[str], Plan], ...]  # (consumers, groups, plan)

    def plan_for(self, identity: "Identity | None") -> Plan:
        if identity is not None:
            subjects = set(identity.subjects())
            for consumers, _, plan in self.overrides:
                if consumers & subjects:
                    return plan
            for _, groups, plan in self.overrides:
                if groups.intersection(identity.groups):
                    return plan
        return self.default


def _compile(policy: "Policy") -> dict[str, RouteCredentials]:
    compiled = {}
    for name, route in policy.routes.items():
        config = route.credentials
        if config is None or config.mode != "inject":
            continue
        overrides = tuple(
            (frozenset(o.consumers), frozenset(o.groups),
             Plan(f"overrides[{i}]", o))
            for i, o in enumerate(config.overrides))
        compiled[name] = RouteCredentials(config, Plan("route", config), overrides)
    return compiled


_routes = PerPolicy(_compile)


def route_credentials(policy: "Policy", route_name: str) -> RouteCredentials | None:
    """A route's compiled mediation (None: passthrough), compiled once per policy version; for
    other concerns that send a route's stored credential themselves (LLM routes' MCP tools)."""
    return _routes(policy).get(route_name)


# -- pipeline phases -------------------------------------------------------------------------


def _origin(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{host.lower()}:{port}"


def _goes_to_service(ctx: "FlowContext", request: http.Request) -> bool:
    svc = ctx.match.route.service
    return _origin(request.scheme, request.host, request.port) == _origin(svc.scheme, svc.host, svc.port)


def _refuse(status: int, message: str) -> http.Response:
    return json_response(status, {"error": "credential_refused", "message": message})


def mediate(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """The credentials phase: pass the client's credential through, or swap in the stored one."""
    if ctx.match is None or ctx.match.kind != "mcp":
        return None
    request = flow.request
    compiled = _routes(ctx.snapshot.policy).get(ctx.match.name)
    if compiled is None:  # passthrough
        header_fields.remove(request.headers, "proxy-authorization")
        return None
    if ctx.mode == "intercept" and not _goes_to_service(ctx, request):
        log.warning("route %s: refusing to send its stored credential to %s", ctx.route_name, request.pretty_host)
        return _refuse(403, f"The stored credential of route {ctx.route_name} is only sent to its upstream")
    identity = ctx.identity
    if (identity is None or identity.method == "anonymous") and not compiled.config.allow_anonymous:
        log.info("route %s: refusing to send its stored credential for an unauthenticated caller", ctx.route_name)
        return _refuse(403, "This route sends a stored credential upstream and only serves authenticated consumers")
    _strip_client_credentials(ctx, request)
    plan = compiled.plan_for(identity)
    plan.apply(request)
    # Logged (unlike routine successes): a stored credential leaving the gateway is worth a line.
    log.debug("route %s: stored credential (%s operations) sent for consumer %s", ctx.route_name, plan.label,
              identity.username if identity else "anonymous")
    return None


def _strip_client_credentials(ctx: "FlowContext", request: http.Request) -> None:
    names = {name for _, name in ctx.consumed_credentials}
    key_auth = ctx.match.route.route.key_auth
    if key_auth is not None:
        names.update(key_auth.key_names)  # even an unconsumed (invalid) key is not the upstream's business
    for name in names:
        remove_key(request, name)  # header and query string alike
    header_fields.remove(request.headers, *CLIENT_CREDENTIAL_HEADERS)


def check_destination(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """After forwarding.forward: a request carrying a stored credential goes to its route's
    service origin and nowhere else. Defense in depth: routing and forwarding already ensure it."""
    if ctx.match is None or ctx.match.kind != "mcp" or ctx.match.name not in _routes(ctx.snapshot.policy):
        return None
    if _goes_to_service(ctx, flow.request):
        return None
    log.error("route %s: the request was about to leave for %s instead of its service; refusing",
              ctx.route_name, flow.request.pretty_host)
    redaction.mask_request(flow.request)  # never forwarded, but mitmproxy keeps and may save the flow
    return _refuse(500, "The gateway refused to send this route's stored credential to another origin")
