"""Who a caller is: the consumers of a policy version indexed by API key digest, username, id and
custom_id (their settings are in consumer_settings.py). A presented key is hashed once and looked
up by digest, so no comparison ever touches the key itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..policy.derived import PerPolicy
from .consumer_settings import ConsumerField, digest_key

if TYPE_CHECKING:
    from ..policy.models import Policy


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
    # Groups an auth plugin authenticated from the validated token (openid-connect's
    # authenticated_groups_claim), which the acl plugin matches by its own rule (governance/access.py).
    authenticated_groups: tuple[str, ...] = ()

    def subjects(self) -> tuple[str, ...]:
        return tuple(s for s in (self.username, self.id, self.custom_id) if s)


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


