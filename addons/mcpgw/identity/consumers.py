"""Consumers and consumer groups (Kong semantics), and the API keys that identify them.

A key is written in plain text, as a secret reference (`{env://DEV_KEY}`), or as
`sha256:<hex digest>` so that policy files in git hold no key. Lookups hash the presented key
once and compare digests in constant time."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, WrapValidator, field_validator

from ..policy.base import StrictModel
from ..policy.secrets import _validate_secret

_SHA256 = re.compile(r"^sha256:([0-9a-fA-F]{64})$")


@dataclass(frozen=True, slots=True)
class KeyDigest:
    """SHA-256 of an API key; the key itself is not kept."""

    digest: bytes
    source: str  # "sha256", "inline" or the secret reference: safe to show

    def __repr__(self) -> str:
        return f"KeyDigest({self.source})"


def digest_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _validate_key(value: Any, handler: Any, info: Any) -> KeyDigest:
    if isinstance(value, KeyDigest):
        return value
    if isinstance(value, str) and (m := _SHA256.match(value.strip())):
        return KeyDigest(bytes.fromhex(m.group(1)), "sha256")
    secret = _validate_secret(value, handler, info)
    if not secret.reveal():
        raise ValueError("an API key must not be empty")
    return KeyDigest(digest_key(secret.reveal()), secret.reference or "inline")


ApiKey = Annotated[KeyDigest, WrapValidator(_validate_key)]


class Consumer(StrictModel):
    id: str | None = Field(None, description="Optional stable id (Kong consumer id)")
    custom_id: str | None = Field(None, description="Optional external id, e.g. the IdP subject")
    groups: list[str] = Field(default_factory=list, description="Consumer group names")
    keys: list[ApiKey] = Field(default_factory=list, description="API keys: plain, {env://NAME}, {file://path} or sha256:<hex>")


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

    def subjects(self) -> tuple[str, ...]:
        return tuple(s for s in (self.username, self.id, self.custom_id) if s)


def groups_validator(groups: dict[str, ConsumerGroup], consumers: dict[str, Consumer]) -> None:
    """Every group a consumer names must be declared; every key must be unique."""
    seen: dict[bytes, str] = {}
    for name, c in consumers.items():
        for g in c.groups:
            if g not in groups:
                raise ValueError(f"consumer {name!r} is in group {g!r}, which is not declared under consumer_groups")
        for k in c.keys:
            if k.digest in seen:
                raise ValueError(f"consumers {seen[k.digest]!r} and {name!r} share an API key")
            seen[k.digest] = name


class KeyIndex:
    """digest -> consumer name, built once per policy version."""

    def __init__(self, consumers: dict[str, Consumer]):
        self._by_digest = {k.digest: name for name, c in consumers.items() for k in c.keys}

    def lookup(self, presented: str) -> str | None:
        # The presented key is hashed before any comparison, so lookup timing can only reveal
        # something about a SHA-256 digest, never about the key itself.
        return self._by_digest.get(digest_key(presented))


def normalize_groups(v: Any) -> Any:
    """consumer_groups may be written as a list of names or a mapping name -> settings."""
    if isinstance(v, list):
        return {g if isinstance(g, str) else g.get("name"): ({} if isinstance(g, str) else
                {k: x for k, x in g.items() if k != "name"}) for g in v}
    return v
