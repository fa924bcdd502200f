"""Which groups a caller is matched by, one rule for route access (access.py, Kong's acl plugin)
and per-tool ACLs (engine.py, ai-mcp-proxy's include_consumer_groups).

A token can authenticate groups (oauth authenticated_groups_claim, set on the identity only from
the validated token's claims, never from a header). Kong's acl plugin uses them "when there is no
consumer or the consumer is anonymous", and with always_use_authenticated_groups also for a mapped
consumer, falling back to the consumer's groups when the token names none; authenticated groups
are never mixed with the consumer's. Kong's ai-mcp-proxy documents its subjects as the consumer, its
consumer groups, or claim values, and says nothing of authenticated groups: here its group subjects
are the groups the same rule picks, so that the route and its tools never judge one caller by two
different sets of groups (docs/oauth.md)."""

from __future__ import annotations

from collections.abc import Container
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..identity.consumers import Identity


def is_consumer(identity: "Identity", consumers: Container[str]) -> bool:
    """A consumer of the policy, as Kong's acl counts it: not anonymous, not a token mapped to none."""
    return identity.method != "anonymous" and identity.username in consumers


def uses_authenticated(identity: "Identity", consumer: bool, always: bool) -> bool:
    """Kong's rule: the token's authenticated groups, when it has some, for a caller that is no
    consumer, or for any caller with always_use_authenticated_groups."""
    return bool(identity.authenticated_groups) and (not consumer or always)
