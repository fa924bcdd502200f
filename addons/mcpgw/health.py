"""The health endpoint (`--set mcp_health=/path`, gateway listeners only): answered by the
gateway itself, before routing, never forwarded, for load balancers and orchestrators.

200 {"status": "ok", ...} while a policy is active; 503 {"status": "no_policy"} when none is
(every request would be refused). The state backend's reachability is reported, not made a
reason for 503: when Redis is down every instance is, and a load balancer taking them all out
would turn an outage of shared state into an outage of the gateway (rate limits fall back to
local counters; routes refuse what they cannot check). Nothing in the answer is secret."""

from __future__ import annotations

import asyncio

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ReverseMode

from .limits import backend as limits_backend
from .responses import json_response
from .state import redis_client

PING_TIMEOUT = 0.5


async def _redis_status(policy) -> str:
    state = policy.gateway.state
    if state.redis is None:
        return "unused"
    try:
        async with asyncio.timeout(PING_TIMEOUT):
            await redis_client.client(state.redis).ping()
        return "ok"
    except Exception:  # unreachable, refused, timed out: reported, never raised
        return "down"


async def answer(flow: http.HTTPFlow, store, path: str) -> bool:
    """Answer `flow` if it asks for the health path on a gateway listener; True when answered."""
    req = flow.request
    if not path or req.path.split("?", 1)[0] != path or not isinstance(flow.client_conn.proxy_mode, ReverseMode):
        return False
    if req.method not in ("GET", "HEAD"):
        flow.response = json_response(405, {"message": "health: GET or HEAD"}, {"Allow": "GET, HEAD"})
        return True
    snap = store.current
    if snap is None:
        flow.response = json_response(503, {"status": "no_policy"})
        return True
    body = {"status": "ok", "policy_version": snap.version, "policy_digest": snap.digest[:12],
            "state_backend": snap.policy.gateway.state.backend, "redis": await _redis_status(snap.policy),
            "rate_limit_fallback": limits_backend.stats.redis_down}
    flow.response = json_response(200, body)
    return True
