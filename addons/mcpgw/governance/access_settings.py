"""Who may use a route at all (Kong's acl plugin): the settings, checked in access.py."""

from __future__ import annotations

import logging

from pydantic import Field, model_validator

from ..policy.base import StrictModel

log = logging.getLogger("mcpgw.policy")


class RouteAccess(StrictModel):
    allow: list[str] | None = Field(None, description="Consumer groups that may use the route; everyone else gets 403")
    deny: list[str] | None = Field(None, description="Consumer groups that may not use the route")
    hide_groups_header: bool = Field(False, description="Do not send X-Consumer-Groups upstream (Kong's default is to send it)")
    include_consumer_groups: bool = Field(True, description="Match consumer groups besides the consumers' ACL groups "
                                                            "(acls); Kong's default is false, decK files say which")
    always_use_authenticated_groups: bool = Field(
        False, description="Match the groups the token authenticated (oauth authenticated_groups_claim) even when it "
                           "maps to a consumer, falling back to the consumer's when it has none (Kong's option)")

    @model_validator(mode="after")
    def _one_list(self) -> "RouteAccess":
        if (self.allow is None) == (self.deny is None):
            raise ValueError("set exactly one of allow or deny (as Kong's acl plugin)")
        return self

    @property
    def groups(self) -> list[str]:
        return self.allow if self.allow is not None else self.deny or []


def check_groups(route_name: str, access: RouteAccess | None, declared: set[str] | dict,
                 acl_groups: frozenset[str] = frozenset(), token_groups: bool = False) -> None:
    """A group name that matches nothing would silently admit everyone on a deny list. On a route
    whose tokens authenticate groups (`token_groups`: its oauth sets authenticated_groups_claim) the
    names come from the authorization server, which the policy cannot list: any name is accepted.
    A policy that declares no group at all (a decK dump of plugins without consumers) has no caller
    in any group, so no name can be a typo for a real one: it is accepted with a warning."""
    if token_groups:
        return
    known = {*acl_groups, *(declared if access is not None and access.include_consumer_groups else ())}
    for group in access.groups if access else ():
        if group not in known:
            where = "under consumer_groups" if access.include_consumer_groups else "in any consumer's acls"
            problem = f"route {route_name!r}: access names group {group!r}, which is not declared {where}"
            if declared or acl_groups:  # e.g. a consumer group meant, without include_consumer_groups
                raise ValueError(problem)
            log.warning("%s; the policy declares no group, so no caller is in it", problem)
