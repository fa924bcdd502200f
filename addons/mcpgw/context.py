"""Per-flow gateway state, created once when a request arrives and kept to the end of the flow.

It is a plain attribute of the flow object, not an entry of `flow.metadata`: saving flows (`-w`,
mitmweb export) and copying them (replay) go through `get_state`, which never sees it, so nothing
secret rides along in a saved flow and a replayed copy is governed afresh. An attribute also
survives a script reload, so the response of a request governed before the reload still is."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

from mitmproxy import http

from .routing import PRM_PREFIX

if TYPE_CHECKING:
    from .identity.consumers import Identity
    from .policy.store import Snapshot
    from .protocol.jsonrpc import Message
    from .routing import RouteMatch

Mode = Literal["gateway", "intercept"]
ServerMessageTransform = Callable[[dict], dict]


@dataclass(slots=True)
class Decision:
    """One governance outcome, for audit, metrics and the mitmweb comment."""

    allowed: bool
    method: str | None = None  # JSON-RPC method, e.g. "tools/call"
    primitive: str | None = None  # "tool" | "prompt" | "resource"
    name: str | None = None  # tool / prompt name or resource URI
    rule: str = ""  # which rule decided, e.g. "acl.tools.push_files.allow" or "acl.default_acl[0].deny"
    reason: str = ""  # short human-readable reason ("acl", "malformed", ...)
    message_id: Any = None
    shadow: bool = False  # shadow mode: denied by policy but forwarded ("would_deny")


@dataclass(slots=True, eq=False)
class FlowContext:
    snapshot: "Snapshot"
    mode: Mode
    match: "RouteMatch | None"
    public_hosts: frozenset[str] = frozenset()
    client_host: str | None = None  # the Host the client sent (gateway mode)
    client_scheme: str = "http"
    started: float = field(default_factory=time.time)
    # identity: set by the identity phases; None = anonymous caller on a route without auth
    identity: "Identity | None" = None
    # OAuth routes: the validated bearer token and its claims (token exchange, claim headers);
    # never saved with the flow (see above), never sent upstream unless passthrough_credentials
    access_token: str | None = None
    token_claims: dict | None = None
    # credentials the gateway consumed (("header", "apikey"), ("query", "apikey"), ("header", "authorization")):
    # credential mediation removes these before the upstream when it swaps in a stored credential
    consumed_credentials: list[tuple[str, str]] = field(default_factory=list)
    # client -> server messages of this request, parsed once
    messages: list["Message"] = field(default_factory=list)
    is_batch: bool = False
    # the body as parsed: (the bytes object, its messages, is_batch); a phase that rewrites the body
    # sets a new bytes object, and one that changes a message replaces it in `messages`
    parsed: "tuple[bytes, tuple[Message, ...], bool] | None" = None
    # server -> client: transforms applied to each JSON-RPC message of the response
    server_transforms: list[ServerMessageTransform] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    legacy_stream: bool = False
    # gateway mode: set when a phase has pointed the request at its upstream; a request for which
    # no phase did so is answered 404 rather than sent to the listener's nominal target
    upstream_set: bool = False
    # the phase that answered the client itself (e.g. "identity.keyauth.authenticate"), for audit
    answered_by: str | None = None
    # sessions: who the caller is (sessions.caller), and the MCP session of this flow once the
    # gateway has established it is the caller's (checked on the way in, or issued on the way out)
    caller: str | None = None
    session_id: str | None = None
    # server -> client: SSE event transforms run before the message layer (e.g. a legacy endpoint watcher)
    event_transforms: list[Callable[[Any], Any]] = field(default_factory=list)
    # LLM routes (ai/): the call's model, options and usage (ai.request.LlmState)
    ai: Any = None
    # fields a concern adds to every audit record of the flow, by key (e.g. "llm": tokens and cost)
    audit_fields: dict[str, Any] = field(default_factory=dict)
    # rate limits: the RateLimit-* / X-RateLimit-* headers of a request that passed its limits
    limit_headers: dict[str, str] | None = None
    limit_results: list[Any] | None = None  # the checks behind them, so a later phase's headers include them
    # token limits (limits/tokens.py): the counters this LLM call is charged to when its answer ends
    token_charges: list[Any] | None = None
    # REST tools (mcpserver/): the REST calls this flow's tools/calls made (rest_tools.spans.RestCall)
    rest_calls: list[Any] = field(default_factory=list)

    @property
    def route_name(self) -> str | None:
        return self.match.name if self.match else None

    @property
    def public_base(self) -> str:
        """The gateway's origin as this client reached it: the listener's scheme and the Host sent."""
        return f"{self.client_scheme}://{self.client_host}" if self.client_host else ""

    def public_url(self, path: str) -> str:
        return self.public_base + path

    @property
    def route_url(self) -> str:
        """The URL a client uses for this route: the gateway URL (gateway mode) or the upstream's."""
        if self.mode == "gateway" and self.match is not None and self.match.kind == "mcp":
            return self.public_url(self.match.prefix or "")
        if self.mode == "gateway" and self.match is not None:
            return self.public_url(self.match.prefix[len(PRM_PREFIX):])
        return self.match.route.service.url if self.match else ""

    @property
    def prm_url(self) -> str:
        """Where this route's Protected Resource Metadata is served (RFC 9728 well-known location)."""
        if self.mode == "gateway" and self.match is not None:
            path = self.match.prefix if self.match.kind == "prm" else PRM_PREFIX + (self.match.prefix or "").rstrip("/")
            return self.public_url(path)
        svc = self.match.route.service if self.match else None
        return f"{svc.scheme}://{svc.url.split('://', 1)[1].split('/', 1)[0]}{PRM_PREFIX}{svc.path}" if svc else ""


_ATTRIBUTE = "_mcp_gateway_context"


def get(flow: http.HTTPFlow) -> FlowContext | None:
    return getattr(flow, _ATTRIBUTE, None)


def attach(flow: http.HTTPFlow, ctx: FlowContext) -> FlowContext:
    setattr(flow, _ATTRIBUTE, ctx)
    return ctx
