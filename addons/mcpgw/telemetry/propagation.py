"""W3C trace context in and out: the client's `traceparent`/`tracestate` (HTTP header, or a
message's `params._meta` as the MCP conventions propagate it) and the gateway's own context sent
upstream in both places.

The body is rewritten after every decision (this runs in the telemetry addon's `request` hook,
after the whole request pipeline) and from the final body the gateway forwards, parsed again with
the gateway's strict parser: what the upstream receives is what was judged, plus `_meta` keys.
A single request whose params object has no `_meta` gets the member written into its bytes
(splice_meta: every other byte as judged, at a cost that does not grow with the arguments);
anything else is serialized again from the parse. A body the strict parser refuses (it was
judged before and cannot be, but never trust that) is forwarded untouched."""

from __future__ import annotations

import json
import re
from json.decoder import scanstring
from json.encoder import encode_basestring_ascii as encode_string
from typing import Any

from mitmproxy import http
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import _TRACECONTEXT_MAXIMUM_TRACESTATE_LENGTH

from ..headers import has_header, header_values, replace_all, set_body
from ..protocol.jsonrpc import JsonRpcParseError, Message, dumps, parse_strict

KEYS = ("traceparent", "tracestate")
# The W3C propagator's own pattern and limits: what it accepts is accepted here, nothing more
# (tests/unit/test_telemetry_propagation.py compares the two on hostile values).
_TRACEPARENT = TraceContextTextMapPropagator._TRACEPARENT_HEADER_FORMAT_RE
_MAX_TRACEPARENT = TraceContextTextMapPropagator._TRACEPARENT_MAXIMUM_LENGTH
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_FLAGS = [TraceFlags(n) for n in range(256)]


def parse(traceparent: str, tracestate: list[str] | None) -> SpanContext | None:
    """The remote parent a W3C traceparent/tracestate names, or None (absent or invalid): what
    TraceContextTextMapPropagator.extract reads, without the Context and span objects around it
    (the gateway reads a parent for every message)."""
    if not traceparent or len(traceparent) > _MAX_TRACEPARENT:
        return None
    match = _TRACEPARENT.search(traceparent)
    if not match:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN or version == "ff" or (version == "00" and rest):
        return None
    state = None
    if tracestate is not None and sum(map(len, tracestate)) + len(tracestate) - 1 <= \
            _TRACECONTEXT_MAXIMUM_TRACESTATE_LENGTH:
        state = TraceState.from_header(tracestate)
    return SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=_FLAGS[int(flags, 16)],
                       trace_state=state)


def parent_from_headers(headers: http.Headers) -> SpanContext | None:
    parents = header_values(headers, "traceparent")
    if len(parents) != 1:
        return None  # none, or two parents: neither is believed
    states = header_values(headers, "tracestate")
    return parse(parents[0], [",".join(states)] if states else None)


def parent_from_meta(message: dict[str, Any]) -> SpanContext | None:
    """The context in a message's params._meta, or None when it carries none (or an invalid one)."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        return None
    parent, state = meta.get("traceparent"), meta.get("tracestate")
    if not isinstance(parent, str):
        return None
    return parse(parent, [state] if isinstance(state, str) else None)


def _context(parent: SpanContext | None) -> Context:
    return trace.set_span_in_context(NonRecordingSpan(parent)) if parent is not None else Context()


def from_headers(headers: http.Headers) -> Context:
    """The client's context from the headers, as an OpenTelemetry Context (an empty one: none)."""
    return _context(parent_from_headers(headers))


def from_meta(message: dict[str, Any]) -> Context | None:
    parent = parent_from_meta(message)
    return _context(parent) if parent is not None else None


def set_headers(request: http.Request, carrier: dict[str, str]) -> None:
    # (replaces every value the client sent)
    replace_all(request.headers, carrier, () if "tracestate" in carrier else ("tracestate",))


def propagate(request: http.Request, carrier: dict[str, str], carriers: list[dict[str, str] | None],
              parsed: tuple[list[Message], bool] | None = None) -> None:
    """`carrier` into the headers and `carriers` into the messages' params._meta (see inject_body),
    with the header fields rewritten once for both (a new Content-Length included)."""
    headers = request.headers
    body = body_with(request.raw_content or b"", carriers, parsed) if carriers else None
    if body is not None and (has_header(headers, "content-encoding") or has_header(headers, "transfer-encoding")):
        set_body(request, body)  # (framing mitmproxy's setter handles)
        body = None
    values = dict(carrier)
    if body is not None:
        values["content-length"] = str(len(body))
        request.raw_content = body
    replace_all(headers, values, () if "tracestate" in carrier else ("tracestate",))


def inject_body(request: http.Request, carriers: list[dict[str, str] | None],
                parsed: tuple[list[Message], bool] | None = None) -> bool:
    """Put each forwarded message's carrier into its params._meta (None: leave that message as it
    is). Returns whether the body changed."""
    body = body_with(request.raw_content or b"", carriers, parsed)
    if body is None:
        return False
    set_body(request, body)
    return True


def body_with(raw: bytes, carriers: list[dict[str, str] | None],
              parsed: tuple[list[Message], bool] | None = None) -> bytes | None:
    """`raw` with each carrier in its message's params._meta, or None when nothing changes.
    `parsed`: the gateway's strict parse of this very bytes object (the flow context's messages,
    while the body is still the one they were parsed from), used instead of parsing it again;
    its objects are copied where changed, never changed themselves."""
    if parsed is None:
        try:
            parsed = parse_strict(raw)
        except JsonRpcParseError:
            return None
    messages, is_batch = parsed
    if len(messages) != len(carriers):
        return None  # a phase changed the body's shape: leave it as the gateway made it
    if not is_batch and carriers[0] is not None:
        spliced = splice_meta(raw, messages[0].obj, carriers[0])
        if spliced is not None:
            return spliced
    objs, changed = [], False
    for msg, carrier in zip(messages, carriers):
        obj = msg.obj
        objs.append(obj)
        if carrier is None or not isinstance(obj.get("method"), str):
            continue  # responses carry no params
        params = obj.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        if (params is not None and not isinstance(params, dict)) or (meta is not None and not isinstance(meta, dict)):
            continue
        meta = {k: v for k, v in (meta or {}).items() if k not in KEYS}
        meta.update(carrier)
        objs[-1] = {**obj, "params": {**(params or {}), "_meta": meta}}
        changed = True
    if not changed:
        return None
    return dumps(objs if is_batch else objs[0])


# JSON's separators with the whitespace around them
_OPEN, _COLON, _COMMA = (re.compile(rf"[ \t\n\r]*{sep}[ \t\n\r]*") for sep in (r"\{", ":", ","))
_SCAN = json.JSONDecoder().scan_once  # (the C scanner: only to find where a member's value ends)


def splice_meta(raw: bytes, obj: dict[str, Any], carrier: dict[str, str]) -> bytes | None:
    """`raw` with `"_meta": carrier` written in as the first member of its params object: the very
    bytes the gateway judged, plus the trace context, without serializing the message again (whose
    cost grows with its arguments). `obj` is the gateway's strict parse of `raw` (no duplicate keys).
    None when the message is not a request with an object of params and no _meta of its own (the
    caller then rebuilds it), or when `raw` is not what the walk expects."""
    params = obj.get("params")
    if not isinstance(obj.get("method"), str) or not isinstance(params, dict) or "_meta" in params:
        return None
    try:
        text = raw.decode("utf-8")
        at = _member_value(text, "params")
    except (ValueError, StopIteration):  # (not UTF-8, or not the JSON the parse said: rebuilt instead)
        return None
    if at is None or text[at] != "{":
        return None
    member = ",".join([f"{encode_string(k)}:{encode_string(v)}" for k, v in carrier.items()])
    member = '"_meta":{' + member + ("}," if params else "}")
    return (text[:at + 1] + member + text[at + 1:]).encode("utf-8")


def _member_value(text: str, name: str) -> int | None:
    """Where the value of the top-level object's member `name` begins in `text`, walking the
    members' keys (decoded, so an escaped spelling of the name is found too) and skipping the
    other members' values with the standard decoder's scanner. Each separator is one match of
    its pattern, whitespace on both sides included."""
    found = _OPEN.match(text)
    while found is not None and text[found.end():found.end() + 1] == '"':
        key, i = scanstring(text, found.end() + 1)
        found = _COLON.match(text, i)
        if found is None:
            return None
        if key == name:
            return found.end() if found.end() < len(text) else None
        found = _COMMA.match(text, _SCAN(text, found.end())[1])
    return None
