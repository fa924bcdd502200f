"""Route access by consumer group (Kong's acl plugin): who may use a route at all, before any
per-tool decision. Exactly one of `allow` / `deny`, as in Kong."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mitmproxy import http
from pydantic import Field, model_validator

from ..policy.base import StrictModel
from ..responses import json_response

if TYPE_CHECKING:
    from ..context import FlowContext

FORBIDDEN = {"message": "You cannot consume this service"}  # Kong's acl answer, 403


class RouteAccess(StrictModel):
    allow: list[str] | None = Field(None, description="Consumer groups that may use the route; everyone else gets 403")
    deny: list[str] | None = Field(None, description="Consumer groups that may not use the route")
    hide_groups_header: bool = Field(False, description="Do not send X-Consumer-Groups upstream (Kong's default is to send it)")

    @model_validator(mode="after")
    def _one_list(self) -> "RouteAccess":
        if (self.allow is None) == (self.deny is None):
            raise ValueError("set exactly one of allow or deny (as Kong's acl plugin)")
        return self

    @property
    def groups(self) -> list[str]:
        return self.allow if self.allow is not None else self.deny or []


def check_groups(route_name: str, access: RouteAccess | None, declared: set[str] | dict) -> None:
    """A group name that matches nothing would silently admit everyone on a deny list."""
    for group in access.groups if access else ():
        if group not in declared:
            raise ValueError(f"route {route_name!r}: access names group {group!r}, which is not declared under consumer_groups")


def check_route_access(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """The phase (pipeline: governance, before per-tool ACLs)."""
    access = ctx.match.route.route.access if ctx.match is not None else None
    if access is None:
        return None
    if ctx.identity is None:
        return json_response(401, {"message": "Unauthorized"})
    groups = set(ctx.identity.groups)
    allowed = bool(groups.intersection(access.allow)) if access.allow is not None else not groups.intersection(access.deny or ())
    if not allowed:
        return json_response(403, FORBIDDEN)
    if not access.hide_groups_header and ctx.identity.groups:
        flow.request.headers["X-Consumer-Groups"] = ", ".join(ctx.identity.groups)
    return None
