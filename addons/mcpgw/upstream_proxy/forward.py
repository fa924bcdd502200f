"""Passthrough routes through their forward proxy (`upstream_proxy`, Kong's proxy_config).

mitmproxy 12 connects each flow to `flow.server_conn.via` when it is set as the request is
forwarded (its HTTP layer asks for a connection to the request's host through that proxy; pooled
connections match on it too): the phase gives the flow a server connection through the route's
proxy for the service's scheme. In reverse (gateway) mode mitmproxy always tunnels through the
proxy with CONNECT, for http services as well; the proxy's Basic credentials go on that CONNECT
request only (the `http_connect_upstream` hook, by the proxy's address), never on the request the
upstream receives. Compiled once per policy version."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from mitmproxy import connection, http

from ..policy.derived import PerPolicy

if TYPE_CHECKING:
    from ..context import FlowContext
    from ..policy.models import Policy
    from ..policy.store import PolicyStore


def _credentials(policy: "Policy") -> dict[tuple[str, int], str]:
    """Proxy address -> its Proxy-Authorization value. Two routes naming one proxy with different
    credentials are refused at load (settings.check_policy): the CONNECT does not say which route it serves."""
    out: dict[tuple[str, int], str] = {}
    for route in policy.routes.values():
        proxy = route.upstream_proxy
        if proxy is None or proxy.auth_username is None or proxy.auth_password is None:
            continue
        token = base64.b64encode(f"{proxy.auth_username}:{proxy.auth_password.reveal()}".encode()).decode()
        for scheme in ("http", "https"):
            if (address := proxy.address_for(scheme)) is not None:
                out[address] = f"Basic {token}"
    return out


_auth = PerPolicy(_credentials)


def route_via(ctx: "FlowContext", flow: http.HTTPFlow) -> None:
    """The phase (pipeline: once the destination is final)."""
    if ctx.match is None or ctx.match.kind != "mcp" or ctx.match.route.route.upstream_proxy is None:
        return None
    address = ctx.match.route.route.upstream_proxy.address_for(flow.request.scheme)
    if address is None:
        return None  # no proxy for this scheme: direct, as in Kong
    via = ("http", address)
    if flow.server_conn.via != via:  # an open connection's `via` cannot change: a new one, through the proxy
        flow.server_conn = connection.Server(address=(flow.request.host, flow.request.port), via=via)
    return None


class UpstreamProxyAuth:
    """Child addon: the route proxy's credentials on the CONNECT mitmproxy sends to it."""

    def __init__(self, store: "PolicyStore") -> None:
        self.store = store

    def http_connect_upstream(self, flow: http.HTTPFlow) -> None:
        snap = self.store.current
        if snap is None or flow.server_conn.address is None:
            return
        value = _auth(snap.policy).get(tuple(flow.server_conn.address[:2]))
        if value is not None:
            flow.request.headers["Proxy-Authorization"] = value
