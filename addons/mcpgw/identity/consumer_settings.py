"""Consumers and consumer groups as the policy declares them (Kong semantics), and their API keys.

A key is written in plain text, as a secret reference (`{env://DEV_KEY}`), or as
`sha256:<hex digest>` so that policy files in git hold no key; `{key: ..., id: ...}` also gives
the credential an id (Kong's X-Credential-Identifier). Only the SHA-256 digest of a key is kept."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, WrapValidator

from ..policy.base import StrictModel
from ..policy.secrets import _validate_secret


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


def normalize_groups(v: Any) -> Any:
    """consumer_groups may be written as a list of names or a mapping name -> settings."""
    if isinstance(v, list):
        return {g if isinstance(g, str) else g.get("name"): ({} if isinstance(g, str) else
                {k: x for k, x in g.items() if k != "name"}) for g in v}
    return v
