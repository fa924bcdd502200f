"""A route's upstream credential settings (applied in credentials.py): Kong request-transformer-advanced
operations (remove, rename, replace, add, append), each a list of "name:value" strings or a mapping
name -> value, and overrides for some consumers or consumer groups."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, Literal, Protocol

from pydantic import Field, field_validator, model_validator

from .policy.base import StrictModel
from .policy.secrets import CREDENTIAL_NAME, Secret, SecretText, SecretTextValue


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
            if not value.parts and CREDENTIAL_NAME.search(name):
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


class _Route(Protocol):
    """What check_route reads of a policy Route (typed here so this module needs no policy import)."""

    credentials: CredentialsConfig | None
    key_auth: object
    oauth: object


def check_route(route_name: str, route: _Route, groups: Collection[str]) -> None:
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
