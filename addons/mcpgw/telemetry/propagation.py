"""W3C trace context in and out: the client's `traceparent`/`tracestate` (HTTP header, or a
message's `params._meta` as the MCP conventions propagate it) and the gateway's own context sent
upstream in both places.

The body is rewritten after every decision (this runs in the telemetry addon's `request` hook,
after the whole request pipeline) and from the final body the gateway forwards, parsed again with
the gateway's strict parser: what the upstream receives is what was judged, plus `_meta` keys.
A body the strict parser refuses (it was judged before and cannot be, but never trust that) is
forwarded untouched."""

from __future__ import annotations

from typing import Any

from mitmproxy import http
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..protocol.jsonrpc import JsonRpcParseError, dumps, parse_strict

_W3C = TraceContextTextMapPropagator()
KEYS = ("traceparent", "tracestate")


class _MetaGetter:
    @staticmethod
    def get(carrier: dict, key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if isinstance(value, str) else None

    @staticmethod
    def keys(carrier: dict) -> list[str]:
        return [k for k in carrier if isinstance(k, str)]


_EMPTY = Context()


def from_headers(headers: http.Headers) -> Context:
    parents = headers.get_all("traceparent")
    if len(parents) != 1:
        return _EMPTY  # none, or two parents: neither is believed
    states = headers.get_all("tracestate")
    carrier = {"traceparent": parents[0], "tracestate": ",".join(states)} if states else {"traceparent": parents[0]}
    return _W3C.extract(carrier, getter=_MetaGetter)  # (a plain dict: mitmproxy's Headers is slow to read)


def from_meta(message: dict[str, Any]) -> Context | None:
    """The context in a message's params._meta, or None when it carries none (or an invalid one)."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("traceparent"), str):
        return None
    found = _W3C.extract(meta, getter=_MetaGetter)
    from opentelemetry import trace

    return found if trace.get_current_span(found).get_span_context().is_valid else None


def set_headers(request: http.Request, carrier: dict[str, str]) -> None:
    headers = request.headers
    headers["traceparent"] = carrier["traceparent"]  # (replaces every value the client sent)
    if "tracestate" in carrier:
        headers["tracestate"] = carrier["tracestate"]
    elif "tracestate" in headers:
        del headers["tracestate"]


def inject_body(request: http.Request, carriers: list[dict[str, str] | None]) -> bool:
    """Put each forwarded message's carrier into its params._meta (None: leave that message as it
    is). Returns whether the body changed."""
    try:
        messages, is_batch = parse_strict(request.raw_content or b"")
    except JsonRpcParseError:
        return False
    if len(messages) != len(carriers):
        return False  # a phase changed the body's shape: leave it as the gateway made it
    changed = False
    for msg, carrier in zip(messages, carriers):
        obj = msg.obj
        if carrier is None or not isinstance(obj.get("method"), str):
            continue  # responses carry no params
        params = obj.get("params")
        if params is None:
            params = obj["params"] = {}
        if not isinstance(params, dict):
            continue
        meta = params.get("_meta")
        if meta is None:
            meta = params["_meta"] = {}
        if not isinstance(meta, dict):
            continue
        for key in KEYS:
            meta.pop(key, None)
        meta.update(carrier)
        changed = True
    if changed:
        objs = [m.obj for m in messages]
        request.content = dumps(objs if is_batch else objs[0])
    return changed
