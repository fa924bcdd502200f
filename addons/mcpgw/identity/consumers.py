"""Consumers and consumer groups (Kong semantics), and the API keys that identify them.

A key is written in plain text, as a secret reference (`{env://DEV_KEY}`), or as
`sha256:<hex digest>` so that policy files in git hold no key; `{key: ..., id: ...}` also gives
the credential an id (Kong's X-Credential-Identifier). Only the SHA-256 digest of a key is kept; a
presented key is hashed once and looked up by digest, so no comparison ever touches the key
itself."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, WrapValidator

from ..policy.base import StrictModel
from ..policy.derived import PerPolicy
from ..policy.secrets import _validate_secret

if TYPE_CHECKING:
    from ..policy.models import Policy

_SHA256 = re.compile(r"^sha256:([0-9a-fA-F]{64})$")


@dataclass(frozen=True, slots=True)
class KeyDigest:
    """SHA-256 of an API key; the key itself is not kept."""

    digest: bytes
    source: str  # "sha256", "inline" or the secret reference: safe to show
    id: str | None = None  # the credential's id, sent upstream as X-Credential-Identifier

    def __repr__(self) -> str:
        return f"KeyDigest({self.source})"


def digest_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _validate_key(value: Any, handler: Any, info: Any) -> KeyDigest:
    if isinstance(value, KeyDigest):
        return value
    if isinstance(value, dict):  # {key: ..., id: ...}
        if set(value) - {"key", "id"} or "key" not in value:
            raise ValueError("a key entry is a key, or a mapping of key and id")
        credential = value.get("id")
        if credential is not None and (not isinstance(credential, str) or not credential.strip()):
            raise ValueError("a key's id must be a non-empty string")
        digest = _validate_key(value["key"], handler, info)
        return KeyDigest(digest.digest, digest.source, credential.strip() if credential else None)
    if isinstance(value, str) and (m := _SHA256.match(value.strip())):
        return KeyDigest(bytes.fromhex(m.group(1)), "sha256")
    secret = _validate_secret(value, handler, info)
    if not secret.reveal():
        raise ValueError("an API key must not be empty")
    return KeyDigest(digest_key(secret.reveal()), secret.reference or "inline")


ApiKey = Annotated[KeyDigest, WrapValidator(_validate_key)]
ConsumerField = Literal["username", "id", "custom_id"]


class Consumer(StrictModel):
    id: str | None = Field(None, min_length=1, description="Optional stable id (Kong consumer id)")
    custom_id: str | None = Field(None, min_length=1, description="Optional external id, e.g. the IdP subject")
    groups: list[str] = Field(default_factory=list, description="Consumer group names")
    acls: list[str] = Field(default_factory=list, description="ACL groups (Kong's acl plugin `acls` credentials): what "
                                                            "route `access` matches, with consumer groups only when "
                                                            "its include_consumer_groups is true")
    keys: list[ApiKey] = Field(default_factory=list, description="API keys: plain, {env://NAME}, {file://path} or "
                                                             "sha256:<hex>; or {key: ..., id: ...} with a credential id")


class ConsumerGroup(StrictModel):
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """The resolved caller, as every later phase sees it."""

    username: str
    id: str | None = None
    custom_id: str | None = None
    groups: tuple[str, ...] = ()
    method: str = "key-auth"  # key-auth | oauth | anonymous
    credential: str | None = None  # id of the key that identified the caller, if it has one
    acl_groups: tuple[str, ...] = ()  # the consumer's `acls` (Kong's acl plugin groups)

    def subjects(self) -> tuple[str, ...]:
        return tuple(s for s in (self.username, self.id, self.custom_id) if s)


def groups_validator(groups: dict[str, ConsumerGroup], consumers: dict[str, Consumer]) -> None:
    """Every group a consumer names must be declared; keys, ids and custom_ids must be unique
    (as Kong's database enforces), so that a lookup never has two answers."""
    seen_keys: dict[bytes, str] = {}
    seen_ids: dict[tuple[str, str], str] = {}
    for name, c in consumers.items():
        if any(not a for a in c.acls):
            raise ValueError(f"consumer {name!r} has an empty ACL group name")
        for g in c.groups:
            if g not in groups:
                raise ValueError(f"consumer {name!r} is in group {g!r}, which is not declared under consumer_groups")
        for k in c.keys:
            if k.digest in seen_keys:
                raise ValueError(f"consumers {seen_keys[k.digest]!r} and {name!r} share an API key")
            seen_keys[k.digest] = name
            if k.id is not None and ("key id", k.id) in seen_ids:
                raise ValueError(f"consumers {seen_ids['key id', k.id]!r} and {name!r} have keys with the same id {k.id!r}")
            if k.id is not None:
                seen_ids["key id", k.id] = name
        for field, value in (("id", c.id), ("custom_id", c.custom_id)):
            if value is None:
                continue
            if (field, value) in seen_ids:
                raise ValueError(f"consumers {seen_ids[field, value]!r} and {name!r} have the same {field} {value!r}")
            seen_ids[field, value] = name


class ConsumerIndex:
    """The consumers of one policy version, by API key digest, username, id and custom_id."""

    def __init__(self, policy: "Policy"):
        self.consumers = policy.consumers
        self.groups = frozenset(policy.consumer_groups)
        self._by_digest = {k.digest: (name, k.id) for name, c in policy.consumers.items() for k in c.keys}
        self.by: dict[str, dict[str, str]] = {
            "username": {name: name for name in policy.consumers},
            "id": {c.id: name for name, c in policy.consumers.items() if c.id},
            "custom_id": {c.custom_id: name for name, c in policy.consumers.items() if c.custom_id},
        }
        # Every value that names some consumer, whichever field it is in.
        self.subjects = frozenset(s for index in self.by.values() for s in index)
        self._identities: dict[tuple[str, str, str | None], Identity] = {}

    def by_key(self, presented: str) -> str | None:
        """The consumer owning an API key. The presented key is hashed before the lookup, so its
        timing can only depend on a SHA-256 digest, never on the key itself."""
        found = self._by_digest.get(digest_key(presented))
        return found[0] if found is not None else None

    def key_identity(self, presented: str) -> Identity | None:
        """The key-auth identity of a presented key (hashed first, as in by_key), with the key's id."""
        found = self._by_digest.get(digest_key(presented))
        return self.identity(found[0], "key-auth", found[1]) if found is not None else None

    def find(self, value: str, fields: Sequence[ConsumerField] = ("username", "id")) -> str | None:
        """The consumer whose `fields` (tried in order, like Kong's consumer_by) equal `value`."""
        for field in fields:
            if (name := self.by[field].get(value)) is not None:
                return name
        return None

    def identity(self, username: str, method: str, credential: str | None = None) -> Identity:
        found = self._identities.get((username, method, credential))
        if found is None:  # one per consumer, method and key id: identities are immutable
            c = self.consumers[username]
            found = self._identities[username, method, credential] = Identity(
                username, c.id, c.custom_id, tuple(c.groups), method, credential, tuple(dict.fromkeys(c.acls)))
        return found


consumer_index = PerPolicy(ConsumerIndex)
"""The ConsumerIndex of a policy, built once per policy version."""


def normalize_groups(v: Any) -> Any:
    """consumer_groups may be written as a list of names or a mapping name -> settings."""
    if isinstance(v, list):
        return {g if isinstance(g, str) else g.get("name"): ({} if isinstance(g, str) else
                {k: x for k, x in g.items() if k != "name"}) for g in v}
    return v
