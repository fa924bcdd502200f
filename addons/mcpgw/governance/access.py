"""Route access by group (Kong's acl plugin): who may use a route at all, before any per-tool
decision. Exactly one of `allow` / `deny`, as in Kong. The groups matched are the consumer's ACL
groups (`acls`, Kong's acl credentials) and, with include_consumer_groups, its consumer groups;
or the groups the caller's validated token authenticated (oauth authenticated_groups_claim), by
Kong's rule for authenticated groups (`matched_groups`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mitmproxy import http

from ..responses import json_response
from .groups import is_consumer, uses_authenticated

if TYPE_CHECKING:
    from ..context import FlowContext
    from ..identity.consumers import Identity
    from .access_settings import RouteAccess

FORBIDDEN = {"message": "You cannot consume this service"}  # Kong's acl answer, 403


def matched_groups(access: "RouteAccess", identity: "Identity", consumer: bool) -> tuple[tuple[str, ...], bool]:
    """The groups the acl matches and whether they are authenticated groups. Kong's acl plugin
    (its always_use_authenticated_groups): "If enabled (true), the authenticated groups will always
    be used even when an authenticated consumer already exists. If the authenticated groups don't
    exist, it will fallback to use the groups associated with the consumer. By default the
    authenticated groups will only be used when there is no consumer or the consumer is anonymous."
    Authenticated groups, when used, are the only groups matched (never mixed with the consumer's).
    `consumer`: the identity is a consumer of the policy (not a token mapped to none, not anonymous)."""
    if uses_authenticated(identity, consumer, access.always_use_authenticated_groups):
        return identity.authenticated_groups, True  # only ever set from a validated token (identity/oauth.py)
    names = (*identity.acl_groups, *identity.groups) if access.include_consumer_groups else identity.acl_groups
    return names, False


def check_route_access(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """The phase (pipeline: governance, before per-tool ACLs)."""
    access = ctx.match.route.route.access if ctx.match is not None else None
    if access is None:
        return None
    if ctx.identity is None:
        return json_response(401, {"message": "Unauthorized"})
    identity = ctx.identity
    names, authenticated = matched_groups(access, identity, is_consumer(identity, ctx.snapshot.policy.consumers))
    groups = set(names)
    allowed = bool(groups.intersection(access.allow)) if access.allow is not None else not groups.intersection(access.deny or ())
    if not allowed:
        return json_response(403, FORBIDDEN)
    if not access.hide_groups_header and names:
        # Kong's acl names authenticated groups X-Authenticated-Groups, a consumer's X-Consumer-Groups;
        # client-sent ones of either name are gone before any identity phase (upstream_headers.py).
        header = "X-Authenticated-Groups" if authenticated else "X-Consumer-Groups"
        flow.request.headers[header] = ", ".join(dict.fromkeys(names))
    return None
