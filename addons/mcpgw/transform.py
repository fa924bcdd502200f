"""Request transformation (Kong's request-transformer and request-transformer-advanced, header and
query string operations): a route's `request_transform`, applied to every request it forwards.

    request_transform:
      remove: {headers: [X-Debug]}
      add: {headers: ["X-Team:platform"], querystring: ["source:gateway"]}

The operations, their order (remove, rename, replace, add, append) and their semantics are the
credential mediation's (credentials.py), without its credential handling: nothing the client sent
is stripped, and values must not be credentials, which only `credentials: {mode: inject}` sends
(to its route's upstream alone, for authenticated callers). Headers that carry what the gateway
has decided on (the MCP routing and session headers, the body's framing, Host) cannot be touched:
the upstream must get the request the gateway judged. The body is never transformed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mitmproxy import http

from .credentials import Plan
from .policy.derived import PerPolicy

if TYPE_CHECKING:
    from .context import FlowContext
    from .policy.models import Policy


def _compile(policy: "Policy") -> dict[str, Plan]:
    return {name: Plan("request_transform", route.request_transform) for name, route in policy.routes.items()
            if route.request_transform is not None and route.request_transform.has_operations()}


_plans = PerPolicy(_compile)


def transform_request(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """The phase (pipeline: after the credential mediation, before forwarding)."""
    if ctx.match is None or ctx.match.kind != "mcp":
        return None
    plan = _plans(ctx.snapshot.policy).get(ctx.match.name)
    if plan is not None:
        plan.apply(flow.request)
    return None
