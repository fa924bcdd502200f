"""Credential mediation: which credential the upstream receives.

- `passthrough` (default): the client's own credential goes upstream as sent (e.g. a GitHub
  token). Only `Proxy-Authorization`, which is always meant for a proxy, is removed; the
  gateway's own key is removed by key-auth's `hide_credentials`.
- `inject` (token swap): once the caller is authenticated, every credential the gateway
  consumed (API key, bearer token), any `Authorization`, `Proxy-Authorization` and `Cookie`,
  and every key name of the route's key-auth are removed, then header and query operations set
  the stored credential, e.g. `add: {headers: ["Authorization:Bearer {env://TOKEN}"]}`.

The operations are Kong's request-transformer-advanced ones, applied in its order: remove,
rename, replace (only when present), add (only when absent), append. Each takes Kong's list of
"name:value" strings or a mapping name -> value. `overrides` give consumers or consumer groups
other operations (see `CredentialsConfig` in credentials_settings.py).

A stored credential only ever goes to its route's upstream origin: intercept-mode requests for
another origin are refused before anything is injected, and `check_destination` verifies the
final target after `forwarding.forward`, in both modes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mitmproxy import http

from . import headers as header_fields
from . import redaction
from .credentials_settings import CredentialsConfig, Operations
from .identity.keyauth import remove_key
from .policy.derived import PerPolicy
from .responses import json_response

if TYPE_CHECKING:
    from .context import FlowContext
    from .identity.consumers import Identity
    from .policy.models import Policy

log = logging.getLogger("mcpgw.credentials")

CLIENT_CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie")


# -- compiled per policy version -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """One set of operations with their values resolved, and what it is called in logs."""

    label: str
    ops: Operations

    def apply(self, request: http.Request) -> None:
        headers, ops = request.headers, self.ops
        for name in ops.remove.headers:
            if name in headers:
                del headers[name]
        for old, new in ops.rename.headers:
            if old in headers:
                values = headers.get_all(old)
                del headers[old]
                headers.set_all(new, values)
        for name, value in ops.replace.headers:
            if name in headers:
                headers[name] = value.reveal()
        for name, value in ops.add.headers:
            if name not in headers:
                headers[name] = value.reveal()
        for name, value in ops.append.headers:
            headers.add(name, value.reveal())
        if any(getattr(ops, op).querystring for op in Operations.model_fields):
            self._apply_query(request)

    def _apply_query(self, request: http.Request) -> None:
        query, ops = request.query, self.ops
        for name in ops.remove.querystring:
            query.set_all(name, [])
        for old, new in ops.rename.querystring:
            values = query.get_all(old)  # Kong renames unconditionally: an absent old name removes the new one
            query.set_all(old, [])
            query.set_all(new, values)
        for name, value in ops.replace.querystring:
            if name in query:
                query.set_all(name, [value.reveal()])
        for name, value in ops.add.querystring:
            if name not in query:
                query.set_all(name, [value.reveal()])
        for name, value in ops.append.querystring:
            query.add(name, value.reveal())


@dataclass(frozen=True, slots=True)
class RouteCredentials:
    config: CredentialsConfig
    default: Plan
    overrides: tuple[tuple[frozenset[str], frozenset[str], Plan], ...]  # (consumers, groups, plan)

    def plan_for(self, identity: "Identity | None") -> Plan:
        if identity is not None:
            subjects = set(identity.subjects())
            for consumers, _, plan in self.overrides:
                if consumers & subjects:
                    return plan
            for _, groups, plan in self.overrides:
                if groups.intersection(identity.groups):
                    return plan
        return self.default


def _compile(policy: "Policy") -> dict[str, RouteCredentials]:
    compiled = {}
    for name, route in policy.routes.items():
        config = route.credentials
        if config is None or config.mode != "inject":
            continue
        overrides = tuple(
            (frozenset(o.consumers), frozenset(o.groups),
             Plan(f"overrides[{i}]", o))
            for i, o in enumerate(config.overrides))
        compiled[name] = RouteCredentials(config, Plan("route", config), overrides)
    return compiled


_routes = PerPolicy(_compile)


def route_credentials(policy: "Policy", route_name: str) -> RouteCredentials | None:
    """A route's compiled mediation (None: passthrough), compiled once per policy version; for
    other concerns that send a route's stored credential themselves (LLM routes' MCP tools)."""
    return _routes(policy).get(route_name)


# -- pipeline phases -------------------------------------------------------------------------


def _origin(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{host.lower()}:{port}"


def _goes_to_service(ctx: "FlowContext", request: http.Request) -> bool:
    svc = ctx.match.route.service
    return _origin(request.scheme, request.host, request.port) == _origin(svc.scheme, svc.host, svc.port)


def _refuse(status: int, message: str) -> http.Response:
    return json_response(status, {"error": "credential_refused", "message": message})


def mediate(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """The credentials phase: pass the client's credential through, or swap in the stored one."""
    if ctx.match is None or ctx.match.kind != "mcp":
        return None
    request = flow.request
    compiled = _routes(ctx.snapshot.policy).get(ctx.match.name)
    if compiled is None:  # passthrough
        header_fields.remove(request.headers, "proxy-authorization")
        return None
    if ctx.mode == "intercept" and not _goes_to_service(ctx, request):
        log.warning("route %s: refusing to send its stored credential to %s", ctx.route_name, request.pretty_host)
        return _refuse(403, f"The stored credential of route {ctx.route_name} is only sent to its upstream")
    identity = ctx.identity
    if (identity is None or identity.method == "anonymous") and not compiled.config.allow_anonymous:
        log.info("route %s: refusing to send its stored credential for an unauthenticated caller", ctx.route_name)
        return _refuse(403, "This route sends a stored credential upstream and only serves authenticated consumers")
    _strip_client_credentials(ctx, request)
    plan = compiled.plan_for(identity)
    plan.apply(request)
    # Logged (unlike routine successes): a stored credential leaving the gateway is worth a line.
    log.debug("route %s: stored credential (%s operations) sent for consumer %s", ctx.route_name, plan.label,
              identity.username if identity else "anonymous")
    return None


def _strip_client_credentials(ctx: "FlowContext", request: http.Request) -> None:
    names = {name for _, name in ctx.consumed_credentials}
    key_auth = ctx.match.route.route.key_auth
    if key_auth is not None:
        names.update(key_auth.key_names)  # even an unconsumed (invalid) key is not the upstream's business
    for name in names:
        remove_key(request, name)  # header and query string alike
    header_fields.remove(request.headers, *CLIENT_CREDENTIAL_HEADERS)


def check_destination(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """After forwarding.forward: a request carrying a stored credential goes to its route's
    service origin and nowhere else. Defense in depth: routing and forwarding already ensure it."""
    if ctx.match is None or ctx.match.kind != "mcp" or ctx.match.name not in _routes(ctx.snapshot.policy):
        return None
    if _goes_to_service(ctx, flow.request):
        return None
    log.error("route %s: the request was about to leave for %s instead of its service; refusing",
              ctx.route_name, flow.request.pretty_host)
    redaction.mask_request(flow.request)  # never forwarded, but mitmproxy keeps and may save the flow
    return _refuse(500, "The gateway refused to send this route's stored credential to another origin")
