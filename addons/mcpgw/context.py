"""Per-flow gateway state, created once when a request arrives and kept to the end of the flow.

It lives in a weak map rather than `flow.metadata` so that saving flows (`-w`, mitmweb export)
never tries to serialize it, and so that nothing secret rides along in a saved flow."""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

from mitmproxy import http

if TYPE_CHECKING:
    from .identity.consumers import Identity
    from .policy.store import Snapshot
    from .protocol.jsonrpc import Message
    from .routing import RouteMatch

Mode = Literal["gateway", "intercept"]
ServerMessageTransform = Callable[[dict], dict]


@dataclass(slots=True)
class Decision:
    """One governance outcome, for audit and the mitmweb comment."""

    allowed: bool
    method: str | None = None
    name: str | None = None
    rule: str = ""
    message_id: Any = None


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
    # credentials the gateway consumed (("header", "apikey"), ("query", "apikey"), ("header", "authorization")):
    # credential mediation removes these before the upstream when it swaps in a stored credential
    consumed_credentials: list[tuple[str, str]] = field(default_factory=list)
    # client -> server messages of this request, parsed once
    messages: list["Message"] = field(default_factory=list)
    is_batch: bool = False
    # server -> client: transforms applied to each JSON-RPC message of the response
    server_transforms: list[ServerMessageTransform] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    legacy_stream: bool = False

    @property
    def route_name(self) -> str | None:
        return self.match.name if self.match else None

    @property
    def public_base(self) -> str:
        """The gateway's origin as this client reached it: the listener's scheme and the Host sent."""
        return f"{self.client_scheme}://{self.client_host}" if self.client_host else ""

    def public_url(self, path: str) -> str:
        return self.public_base + path


_contexts: "weakref.WeakKeyDictionary[http.HTTPFlow, FlowContext]" = weakref.WeakKeyDictionary()


def get(flow: http.HTTPFlow) -> FlowContext | None:
    return _contexts.get(flow)


def attach(flow: http.HTTPFlow, ctx: FlowContext) -> FlowContext:
    _contexts[flow] = ctx
    return ctx
