"""Intercept mode under `gateway.intercept_unmatched: block`: a CONNECT tunnel opens only to a
destination some route governs.

The requests inside a tunnel are governed (or blocked) one by one, but mitmproxy carries whatever
it does not recognise as TLS or HTTP as a raw TCP stream (`CONNECT 127.0.0.1:6379`, then Redis'
protocol): under `block`, refusing the requests alone would still leave the proxy a TCP relay to
any host and port it can reach. A destination counts as governed when a service of the policy is
at its address and port, under either scheme (destinations.py): a plain-http service is reached
through CONNECT too (undici's proxy agent tunnels every request). Raw streams into a governed
tunnel are refused there (Destinations.next_layer)."""

from __future__ import annotations

import logging

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ReverseMode

from .destinations import Destinations, Unresolvable
from .policy.store import PolicyStore
from .responses import json_response

log = logging.getLogger("mcpgw.tunnels")


class TunnelGate:
    """Child addon of the gateway: the `http_connect` hook."""

    def __init__(self, store: PolicyStore, destinations: Destinations):
        self.store = store
        self.destinations = destinations

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or isinstance(flow.client_conn.proxy_mode, ReverseMode):
            return
        try:
            flow.response = await self._refusal(flow.request)
        except Exception:  # fail closed: a tunnel the gateway could not judge is not opened
            log.exception("could not check a CONNECT to %s:%d; refusing", flow.request.host, flow.request.port)
            flow.response = json_response(502, {"message": "The gateway could not check this tunnel's destination; "
                                                           "it was not opened"})

    async def _refusal(self, request: http.Request) -> http.Response | None:
        snap = self.store.current
        if snap is None:
            return json_response(503, {"message": "MCP gateway has no active policy"})
        if snap.policy.gateway.intercept_unmatched != "block":
            return None
        host, port = request.host, request.port
        try:
            for scheme in ("https", "http"):
                if await self.destinations.origins(snap, scheme, host, port):
                    return None
        except Unresolvable as e:
            return json_response(e.status, {"error": "unknown_destination", "message": str(e)})
        return json_response(403, {"message": f"{host}:{port} is not governed by this gateway's policy"})
