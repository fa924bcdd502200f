"""The REST calls a tools/call made, as OpenTelemetry CLIENT spans under the call's SERVER span.

The MCP server (mcpserver/server.py) notes each call it sent on the flow's context
(`ctx.rest_calls`: a RestCall per REST request, with the JSON-RPC id of the message that made
it); the telemetry addon, when it ends a message's SERVER span, ends these as its children. A
span is named `HTTP {method}` (the HTTP client convention without a route template) and carries
`http.request.method`, `url.full` without the query string (it may hold an API key),
`server.address`/`server.port`, `http.response.status_code`, and `error.type` (the status of an
HTTP error, else `timeout`, `unreachable` or `response_too_large`) with status ERROR. Never a
payload, a header or a credential.

The SDK is imported only when spans are ended (by the telemetry addon): the gateway runs without
it when telemetry is off, and mcpserver/ imports RestCall from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Status

    from ..telemetry.spans import Started, Tracer

_ERRORS = {"timeout": "timeout", "unreachable": "unreachable", "too large": "response_too_large"}


@dataclass(frozen=True, slots=True)
class RestCall:
    rpc_id: Any  # the tools/call's JSON-RPC id
    method: str
    scheme: str
    host: str
    port: int
    path: str  # without the query string
    start_ns: int
    end_ns: int
    status: int | None
    error: str | None  # as the audit note says it: timeout, unreachable, too large


def _attributes(call: RestCall) -> tuple[dict[str, Any], "Status"]:
    from opentelemetry.trace import Status, StatusCode

    default_port = {"http": 80, "https": 443}.get(call.scheme)
    authority = call.host if call.port == default_port else f"{call.host}:{call.port}"
    attrs: dict[str, Any] = {"http.request.method": call.method, "url.full": f"{call.scheme}://{authority}{call.path}",
                             "server.address": call.host, "server.port": call.port}
    if call.status is not None:
        attrs["http.response.status_code"] = call.status
    err = _ERRORS.get(call.error or "") if call.error else (str(call.status) if (call.status or 0) >= 400 else None)
    if err is None:
        return attrs, Status(StatusCode.UNSET)
    attrs["error.type"] = err
    return attrs, Status(StatusCode.ERROR)


def end_spans(tracer: "Tracer", server: "Started", calls: list[RestCall], rpc_id: Any) -> None:
    """The CLIENT spans of the REST calls the message `rpc_id` made, under its SERVER span."""
    from opentelemetry.trace import SpanKind

    for call in calls:
        if call.rpc_id != rpc_id or type(call.rpc_id) is not type(rpc_id):  # 1 and True, 1 and "1" differ
            continue
        attrs, status = _attributes(call)
        tracer.end(tracer.start_child(server, call.start_ns), f"HTTP {call.method}", SpanKind.CLIENT, attrs, status,
                   call.end_ns)
