"""Who may use a route at all (Kong's acl plugin): the settings, checked in access.py."""

from __future__ import annotations

from pydantic import Field, model_validator

from ..policy.base import StrictModel


class RouteAccess(StrictModel):
    allow: list[str] | None = Field(None, description="Consumer groups that may use the route; everyone else gets 403")
    deny: list[str] | None = Field(None, description="Consumer groups that may not use the route")
    hide_groups_header: bool = Field(False, description="Do not send X-Consumer-Groups upstream (Kong's default is to send it)")
    include_consumer_groups: bool = Field(True, description="Match consumer groups besides the consumers' ACL groups "
                                                            "(acls); Kong's default is false, decK files say which")

    @model_validator(mode="after")
    def _one_list(self) -> "RouteAccess":
        if (self.allow is None) == (self.deny is None):
            raise ValueError("set exactly one of allow or deny (as Kong's acl plugin)")
        return self

    @property
    def groups(self) -> list[str]:
        return self.allow if self.allow is not None else self.deny or []


def check_groups(route_name: str, access: RouteAccess | None, declared: set[str] | dict,
                 acl_groups: frozenset[str] = frozenset()) -> None:
    """A group name that matches nothing would silently admit everyone on a deny list."""
    known = {*acl_groups, *(declared if access is not None and access.include_consumer_groups else ())}
    for group in access.groups if access else ():
        if group not in known:
            where = "under consumer_groups" if access.include_consumer_groups else "in any consumer's acls"
            raise ValueError(f"route {route_name!r}: access names group {group!r}, which is not declared {where}")
