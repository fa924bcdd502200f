"""Route access by group (Kong's acl plugin): who may use a route at all, before any per-tool
decision. Exactly one of `allow` / `deny`, as in Kong. The groups matched are the consumer's ACL
groups (`acls`, Kong's acl credentials) and, with include_consumer_groups, its consumer groups."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mitmproxy import http

from ..responses import json_response

if TYPE_CHECKING:
    from ..context import FlowContext

FORBIDDEN = {"message": "You cannot consume this service"}  # Kong's acl answer, 403


def check_route_access(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """The phase (pipeline: governance, before per-tool ACLs)."""
    access = ctx.match.route.route.access if ctx.match is not None else None
    if access is None:
        return None
    if ctx.identity is None:
        return json_response(401, {"message": "Unauthorized"})
    identity = ctx.identity
    names = (*identity.acl_groups, *identity.groups) if access.include_consumer_groups else identity.acl_groups
    groups = set(names)
    allowed = bool(groups.intersection(access.allow)) if access.allow is not None else not groups.intersection(access.deny or ())
    if not allowed:
        return json_response(403, FORBIDDEN)
    if not access.hide_groups_header and names:
        flow.request.headers["X-Consumer-Groups"] = ", ".join(dict.fromkeys(names))
    return None
