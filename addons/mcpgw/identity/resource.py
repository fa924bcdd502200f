"""The URLs that identify a route as an OAuth protected resource (the `aud` a token must carry,
RFC 8707; the `resource` of its Protected Resource Metadata, RFC 9728), from what the gateway
established, never from the Host header the client sent.

- The route's configured `resource` (oauth.resource, prm.resource), when set, is the only one.
- Otherwise, in gateway mode: the route's path under each of the gateway's public URLs
  (`gateway.urls`), then under the address of the listener the connection came in on (the local
  IP and port the kernel reports, with the listener's scheme; `localhost` too when that address
  is loopback). No other server can be reached at those, so a token for one is a token for us.
- In intercept mode the client talks to the service's own URL: that is the resource.

The client's Host only picks, among these, the one the metadata names (so that an MCP client,
which refuses a `resource` other than the URL it connected to, accepts it); it never adds one."""

from __future__ import annotations

import functools
import ipaddress
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from mitmproxy import http

if TYPE_CHECKING:
    from ..context import FlowContext

_DEFAULT_PORTS = {"http": 80, "https": 443}


def candidates(ctx: "FlowContext", flow: http.HTTPFlow, configured: str | None) -> tuple[str, ...]:
    """Every URL a token for this route may name as its audience, the canonical one first."""
    if configured:
        return (configured,)
    if ctx.mode != "gateway" or ctx.match is None:
        return (ctx.route_url,) if ctx.route_url else ()
    path = ctx.route_url[len(ctx.public_base):]  # the route's own path: only the Host part is the client's
    sockname = flow.client_conn.sockname
    listener = (sockname[0], sockname[1]) if sockname and sockname[0] else None
    return _candidates(tuple(ctx.snapshot.policy.gateway.urls), path, ctx.client_scheme, listener)


def for_client(ctx: "FlowContext", flow: http.HTTPFlow, configured: str | None) -> str:
    """The one to name in this client's metadata: the candidate at the Host it used, or the first."""
    found = candidates(ctx, flow, configured)
    if not found:
        return ""
    host = _authority(ctx.client_scheme, ctx.client_host or "")
    return next((c for c in found if _authority(*_scheme_netloc(c)) == host), found[0])


@functools.lru_cache(maxsize=1024)  # per policy's URLs, route path and listener: a handful of each
def _candidates(urls: tuple[str, ...], path: str, scheme: str, listener: tuple[str, int] | None) -> tuple[str, ...]:
    found = [u + path for u in urls]
    if listener is not None:
        address, port = listener
        try:
            ip = ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            ip = None
        if ip is not None and ip.version == 6 and ip.ipv4_mapped:  # a dual-stack listener's IPv4 client
            ip = ip.ipv4_mapped
        names = [f"[{ip}]" if ip is not None and ip.version == 6 else str(ip or address)]
        if ip is not None and ip.is_loopback:
            names.append("localhost")
        suffix = "" if _DEFAULT_PORTS.get(scheme) == port else f":{port}"
        found += [f"{scheme}://{name}{suffix}{path}" for name in names]
    return tuple(dict.fromkeys(found))


def _scheme_netloc(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _authority(scheme: str, netloc: str) -> str:
    """host[:port], lower-case, without the scheme's default port."""
    netloc = netloc.lower()
    default = f":{_DEFAULT_PORTS.get(scheme)}"
    return netloc[:-len(default)] if netloc.endswith(default) else netloc
