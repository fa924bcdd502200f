"""Gateway mode: the URLs an upstream puts in `Location` and `Content-Location` name the gateway.

An upstream builds these from the address it was reached at, which is the service's: Starlette's
trailing-slash redirect answers `.../github-mcp/` with `307 Location: http://127.0.0.1:8931/mcp`.
Passed through, that tells the client where the upstream is and sends it there, around the
gateway (and a client that follows redirects does, credentials and all). So, as nginx's default
`proxy_redirect` does, a URL into the route's upstream becomes the gateway's URL for the same
resource (RouteTable.gateway_path), and the client's next request comes through the gateway again.

- A URL on the upstream's origin that the route cannot reach (outside the service path, or a
  prefix a `strip_path: false` route does not answer) is removed: it could only disclose the
  upstream, and nothing behind it is reachable through this route. So is a value that does not
  parse as a URL.
- A URL on any other origin is left as it is. The gateway never follows a redirect itself
  (mitmproxy does not), so where it points is the client's business.

Relative references are resolved against the upstream request's URL first: `/mcp` from the
upstream means the upstream's `/mcp`, not the gateway's."""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from mitmproxy import http

from . import headers
from .routing import RouteTable, literal_host

if TYPE_CHECKING:
    from .context import FlowContext

log = logging.getLogger("mcpgw.redirects")

LOCATION_HEADERS = ("Location", "Content-Location")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def rewrite_locations(ctx: "FlowContext", flow: http.HTTPFlow) -> None:
    """Response headers of a forwarded MCP request: point location headers at the gateway."""
    response = flow.response
    if response is None or ctx.mode != "gateway" or not ctx.upstream_set or ctx.match is None \
            or ctx.match.kind != "mcp":
        return None
    index = headers.index(response.headers)
    if b"location" not in index and b"content-location" not in index:
        return None  # the common case: one dict lookup each
    base = flow.request.url  # the upstream request as sent: relative references resolve against it
    service = ctx.match.route.service
    upstream = {(service.scheme, literal_host(service.host), service.port),
                (flow.request.scheme, literal_host(flow.request.host), flow.request.port)}
    for name in LOCATION_HEADERS:
        values = headers.header_values(response.headers, name)
        if not values:
            continue
        kept = [v for v in (_rewritten(ctx, base, upstream, value) for value in values) if v is not None]
        if kept != values:
            if len(kept) < len(values):
                log.warning("route %s: removed a %s header naming the upstream outside this route",
                            ctx.route_name, name)
            headers.remove(response.headers, name)
            for value in kept:
                response.headers.add(name, value)
    return None


def _rewritten(ctx: "FlowContext", base: str, upstream: set[tuple[str, str, int]], value: str) -> str | None:
    """The value to send for one location header: the gateway's URL, the value unchanged (another
    origin), or None (remove it)."""
    try:
        target = urlsplit(urljoin(base, value.strip()))
        origin = (target.scheme.lower(), literal_host(target.hostname or ""),
                  target.port or _DEFAULT_PORTS.get(target.scheme.lower(), 0))
    except ValueError:
        return None  # unparseable (a bad port, a broken IPv6 literal): it may well name the upstream
    if not _is_upstream(origin, upstream):
        return value
    path = RouteTable.gateway_path(ctx.match, (target.path or "/") + (f"?{target.query}" if target.query else ""))
    if path is None:
        return None
    return ctx.public_url(path) + (f"#{target.fragment}" if target.fragment else "")


def _is_upstream(origin: tuple[str, str, int], upstream: set[tuple[str, str, int]]) -> bool:
    if origin in upstream:
        return True
    # localhost, 127.0.0.0/8 and ::1 name the same local server: an upstream on one may say another
    scheme, host, port = origin
    return _is_loopback(host) and any(s == scheme and p == port and _is_loopback(h) for s, h, p in upstream)


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return False
