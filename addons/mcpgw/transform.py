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
from pydantic import model_validator

from . import redaction
from .credentials import Operations, Plan
from .policy.derived import PerPolicy

if TYPE_CHECKING:
    from .context import FlowContext
    from .policy.models import Policy

# What the gateway compared with the body or relies on to forward the request as judged.
PROTECTED_HEADERS = frozenset({"mcp-method", "mcp-name", "mcp-session-id", "mcp-protocol-version", "last-event-id",
                               "content-type", "content-length", "content-encoding", "transfer-encoding", "host"})


class RequestTransform(Operations):
    """Header and query string operations for every request of the route (no credentials)."""

    @model_validator(mode="after")
    def _no_decided_headers_no_credentials(self) -> "RequestTransform":
        for op in Operations.model_fields:
            section = getattr(self, op)
            for name in _names(section.headers):
                if name.lower() in PROTECTED_HEADERS:
                    raise ValueError(f"{op}.headers: {name} cannot be changed: the upstream must get the request the "
                                     "gateway decided on")
            if op in ("replace", "add", "append"):
                for where in ("headers", "querystring"):
                    for name, value in getattr(section, where):
                        if value.reference or getattr(value, "parts", ()) or redaction.CREDENTIAL_NAME.search(name):
                            raise ValueError(f"{op}.{where}: {name} looks like a credential; a stored credential is "
                                             "sent with credentials: {mode: inject} only")
        return self


def _names(entries: list) -> list[str]:
    """Names of remove (plain names), rename (old and new) and set (name, value) entries."""
    return [n for e in entries for n in ((e,) if isinstance(e, str) else (e[0], e[1]) if isinstance(e[1], str)
                                        else (e[0],))]


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
