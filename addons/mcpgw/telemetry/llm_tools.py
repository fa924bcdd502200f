"""Spans for the MCP tool calls an LLM provider made inside a Responses request (OpenAI's `mcp`
tool: the provider calls the MCP server itself, and the answer reports each call as an `mcp_call`
output item; ai/mcp_tools.py governs them and tells CALL_OBSERVERS of each finished one).

Each becomes an INTERNAL span, child of the LLM call's CLIENT span (the provider did the calling,
not the gateway: no CLIENT span is claimed for it), named as the MCP conventions name a tool
call, `tools/call {gen_ai.tool.name}` (the name is left out when the call was outside the tools
the gateway allowed: that name is the provider's text), with `mcp.method.name`,
`gen_ai.tool.name`, `gen_ai.operation.name=execute_tool`, `mcpgw.route` (the MCP route the
server_url named), `mcpgw.llm.mcp_server_label`, `mcpgw.decision` (`allow`, or
`outside_allowed_tools` and status ERROR), and `error.type=tool_error` when the item reports an
error. Its interval is from the request to the provider until the gateway saw the finished item (at
the latest the end of the answer):
the call took place inside it; the provider does not say when.

A call seen for a flow whose spans are never finished (telemetry off for the route) is dropped
when its flow ends; at most MAX_PENDING flows are remembered."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from opentelemetry.trace import SpanKind, Status, StatusCode

from .conventions import _text

if TYPE_CHECKING:
    from .spans import Started, Tracer

log = logging.getLogger("mcpgw.telemetry")

MAX_PENDING = 1000  # flows in flight with an LLM's tool calls noted (each keeps its LLM state)
enabled: Callable[[], bool] = lambda: False  # set by the telemetry addon: is anything traced
_pending: dict[int, tuple[Any, list[tuple[int, dict[str, Any]]]]] = {}  # id(state) -> (state, [(seen ns, call)])


def seen(state: Any, call: dict[str, Any]) -> None:
    """ai/mcp_tools.CALL_OBSERVERS: a finished mcp_call item of an LLM answer."""
    try:
        if not enabled():
            return
        entry = _pending.get(id(state))
        if entry is None or entry[0] is not state:  # (the state is kept: its id is not reused meanwhile)
            if len(_pending) >= MAX_PENDING:
                del _pending[next(iter(_pending))]
            entry = _pending[id(state)] = (state, [])
        entry[1].append((time.time_ns(), dict(call)))
    except Exception:  # inside the answer's relay: telemetry must not disturb it
        log.exception("could not note an LLM's MCP tool call")


def forget(state: Any) -> list[tuple[int, dict[str, Any]]]:
    entry = _pending.pop(id(state), None) if state is not None else None
    return entry[1] if entry is not None and entry[0] is state else []


def end_spans(tracer: Tracer, parent: Started, state: Any, end_ns: int) -> None:
    """The spans of the tool calls noted for this LLM call, under its CLIENT span (which ends at end_ns:
    a JSON answer's items are read after its last byte arrived)."""
    for seen_ns, call in forget(state):
        span = tracer.start_child(parent, parent.start)
        name = call.get("name")
        allowed = call.get("decision") == "allow"
        attrs: dict[str, Any] = {"mcp.method.name": "tools/call", "gen_ai.operation.name": "execute_tool",
                                 "mcpgw.decision": _text(call.get("decision") or "allow")}
        if isinstance(name, str):
            attrs["gen_ai.tool.name"] = _text(name)
        for key, value in (("mcpgw.route", call.get("route")), ("mcpgw.llm.mcp_server_label", call.get("server_label")),
                           ("mcpgw.llm.mcp_call.id", call.get("id"))):
            if isinstance(value, str) and value:
                attrs[key] = _text(value)
        status = Status(StatusCode.UNSET)
        if call.get("error"):
            attrs["error.type"] = "tool_error"
        if not allowed or call.get("error"):
            attrs.setdefault("error.type", "outside_allowed_tools")
            status = Status(StatusCode.ERROR)
        title = f"tools/call {attrs['gen_ai.tool.name']}" if allowed and "gen_ai.tool.name" in attrs else "tools/call"
        tracer.end(span, title, SpanKind.INTERNAL, attrs, status, min(seen_ns, end_ns))
