"""Tell the upstream who the caller is, with Kong's headers, and make sure nobody else can.

Upstreams behind Kong trust `X-Consumer-*` headers because Kong sets them. A client could send
them itself, so on every governed route they are removed on the way in, before any identity
phase, whether or not the route forwards the identity (`upstream_identity_headers`), and so are
their look-alikes: CGI, WSGI and many frameworks read `X_Consumer_Groups` as the same variable
(HTTP_X_CONSUMER_GROUPS) as `X-Consumer-Groups`. Gateway-owned names are compared in the form
`canonical_header_name` gives."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from mitmproxy import http

from .. import headers as header_fields
from ..canonical import canonical_header_name, is_gateway_header
from ..responses import json_response

if TYPE_CHECKING:
    from ..context import FlowContext
    from .consumers import Identity

log = logging.getLogger("mcpgw.identity")

_UNSAFE_IN_HEADER = re.compile(r"[\x00-\x1f\x7f]")


def strip_client_identity_headers(ctx: "FlowContext", flow: http.HTTPFlow) -> None:
    """Remove X-Consumer-*, X-Credential-*, X-Anonymous-* and X-Authenticated-* headers the client sent, in any spelling."""
    headers = flow.request.headers
    fields = headers.fields
    kept = tuple(f for f in fields if not is_gateway_header(f[0]))
    if len(kept) == len(fields):
        return None
    forged = sorted({f[0].decode("latin-1") for f in fields if is_gateway_header(f[0])})
    headers.fields = kept
    log.info("route %s: removed client-sent identity headers %s", ctx.route_name, ", ".join(forged))
    return None


def identity_headers(ctx: "FlowContext") -> Mapping[str, str]:
    return _headers_for(ctx.identity) if ctx.identity is not None else {}


@functools.lru_cache(maxsize=4096)  # identities are immutable; callers must not change the dict
def _headers_for(identity: "Identity", only: tuple[str, ...] | None = None) -> Mapping[str, str]:
    headers = {"X-Consumer-Username": identity.username}
    if identity.id:
        headers["X-Consumer-ID"] = identity.id
    if identity.custom_id:
        headers["X-Consumer-Custom-ID"] = identity.custom_id
    if identity.credential:
        headers["X-Credential-Identifier"] = identity.credential
    if identity.groups:
        headers["X-Consumer-Groups"] = ", ".join(identity.groups)
    if identity.method == "anonymous":
        headers["X-Anonymous-Consumer"] = "true"
    return headers if only is None else {k: v for k, v in headers.items() if k in only}


@functools.lru_cache(maxsize=4096)
def _unsafe(identity: "Identity | None") -> bool:
    return identity is not None and any(_UNSAFE_IN_HEADER.search(v) for v in _headers_for(identity).values())


def add_identity_headers(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """Routes with `upstream_identity_headers` (true, or the names to send): forward the resolved
    identity upstream."""
    setting = ctx.match.route.route.upstream_identity_headers if ctx.match is not None else False
    if not setting:
        return None
    headers = identity_headers(ctx) if setting is True or ctx.identity is None else _headers_for(ctx.identity, setting)
    # Names from token claims end up here too: never let one split or corrupt a header.
    if _unsafe(ctx.identity):
        log.error("route %s: identity %r cannot be sent as a header; refusing", ctx.route_name, ctx.identity)
        return json_response(500, {"message": "The caller's identity cannot be forwarded to the upstream"})
    # Client-sent X-Consumer-* headers are already gone (strip_client_identity_headers); the route's
    # access check may have set X-Consumer-Groups: replace, never duplicate.
    header_fields.replace_all(flow.request.headers, headers)
    return None
