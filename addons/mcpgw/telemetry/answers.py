"""Errors in the upstream's answers, for the spans and metrics (OTel MCP conventions, error.type):
a JSON-RPC error response gives its code (error.type and rpc.response.status_code, e.g. -32602),
a `tools/call` result with `isError: true` gives `tool_error`.

Read as the answer passes, never held: a response phase (`watch_upstream`, last of the response
header phases) wraps the stream mitmproxy relays, sees each chunk as the upstream sent it and
returns it unchanged. A chunk is only searched for an error object (`"error": {`) or a true
`"isError": true`; a message is parsed (json.loads) only when one appears in it, so an answer
without errors costs a regex search per chunk. A JSON body, or one SSE event, is kept for that parse up to MAX_UNIT
bytes; a longer one with an error in it is not read (its span shows no error). A compressed
answer (Content-Encoding other than identity) is not read. Off (telemetry not on for the route):
the phase returns at once.

Imports no OpenTelemetry module: pipeline.py imports this whether telemetry is on or not."""

from __future__ import annotations

import json
import re
import weakref
from typing import Any, Callable

from mitmproxy import http

from ..headers import header

MAX_UNIT = 64 * 1024
TOOL_ERROR = "tool_error"
# an error object or a true isError, outside a JSON string (inside one the quotes are escaped:
# \"error\"); results carry "isError": false, which must not cost a parse. The quote comes
# first and the backslash test after it: a pattern that begins with a literal is searched for
# that character in C, about six times faster on a tool result full of quotes than a leading
# look-behind, which is tried at every byte.
_MARK = re.compile(rb'"(?<!\\")(?:error"\s*:\s*\{|isError"\s*:\s*true)')
_OVERLAP = 32  # bytes of the previous chunk searched again: a key split between two chunks
_EVENT_ENDS = (b"\r\n\r\n", b"\n\n", b"\r\r")  # a blank line, in each line ending


def event_ends(data: bytes):
    """(start, end) of each event end in `data`, left to right, not overlapping: what
    re.finditer(rb"\r\n\r\n|\n\n|\r\r") gives, found with bytes.find (C's memmem) instead of a
    regex scan, which tries every byte (about 6 ns a byte here, on every chunk of every answer).
    No two of the endings begin with the same two bytes, so the leftmost is the one found."""
    if b"\r" not in data:  # (LF line endings: one search)
        pos = data.find(b"\n\n")
        while pos >= 0:
            yield pos, pos + 2
            pos = data.find(b"\n\n", pos + 2)
        return
    found = [data.find(sep) for sep in _EVENT_ENDS]  # the next of each, from where the search is
    while True:
        start, k = -1, -1
        for j, i in enumerate(found):
            if i >= 0 and (start < 0 or i < start):
                start, k = i, j
        if start < 0:
            return
        end = start + len(_EVENT_ENDS[k])
        yield start, end
        for j, i in enumerate(found):
            if 0 <= i < end:  # (passed, or inside this end: searched again after it)
                found[j] = data.find(_EVENT_ENDS[j], end)


# Set by the telemetry addon: whether a route's traffic is traced (mcp_otlp, or its own section).
enabled: Callable[[str | None], bool] = lambda route: False
_watches: weakref.WeakKeyDictionary[http.HTTPFlow, "Watch"] = weakref.WeakKeyDictionary()


def id_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def errors_in(doc: Any, out: dict[str, int | str]) -> None:
    """JSON-RPC responses in `doc` (a message or a batch) that are errors, by id key."""
    for m in doc if isinstance(doc, list) else [doc]:
        if not isinstance(m, dict) or "id" not in m:
            continue
        error, result = m.get("error"), m.get("result")
        if isinstance(error, dict):
            code = error.get("code")
            out[id_key(m["id"])] = code if isinstance(code, int) and not isinstance(code, bool) else "_OTHER"
        elif isinstance(result, dict) and result.get("isError") is True:
            out[id_key(m["id"])] = TOOL_ERROR


def body_errors(body: bytes, out: dict[str, int | str]) -> None:
    """Errors in a whole JSON body (a buffered answer), parsed only when an error key is in it."""
    if len(body) <= MAX_UNIT and _MARK.search(body):
        try:
            errors_in(json.loads(body), out)
        except ValueError:
            pass


def _event_data(event: bytes) -> bytes:
    lines = [line[5:].removeprefix(b" ") for line in re.split(rb"\r\n|\r|\n", event) if line.startswith(b"data:")]
    return b"\n".join(lines)


class Watch:
    """mitmproxy's response stream callable: relays each chunk (or hands it to the stream callable
    already set, such as the gateway's SSE transforms) and notes the errors it carries."""

    __slots__ = ("inner", "sse", "unit", "last", "marked", "over", "errors", "__weakref__")

    def __init__(self, inner: Any, sse: bool):
        self.inner = inner if callable(inner) else None
        self.sse = sse
        self.unit = bytearray()  # the JSON body, or the SSE event, being received
        self.last = b""
        self.marked = False  # an error key was seen in it
        self.over = False  # it outgrew MAX_UNIT: not kept
        self.errors: dict[str, int | str] = {}

    def __call__(self, chunk: bytes):
        try:
            self._see(chunk)
        except Exception:  # (telemetry only: the answer is relayed whatever happens here)
            self.over = True
        if self.inner is not None:
            return self.inner(chunk)
        return [chunk] if chunk else []  # never an empty chunk: it would end a chunked response

    def _see(self, chunk: bytes) -> None:
        if not chunk:  # the end
            self._unit_done()
            return
        if not self.sse:
            self._add(chunk)
            return
        prev = self.last  # the current event's last bytes: an event end split between two chunks
        data = prev + chunk
        pos, event_start = 0, 0  # where the current event's bytes begin, in chunk and in data
        for start, end in event_ends(data):
            if end <= len(prev):
                continue
            self._add(chunk[pos:max(start - len(prev), pos)])
            self._unit_done()
            pos, event_start = end - len(prev), end
        self._add(chunk[pos:])
        self.last = data[max(len(data) - 3, event_start):]

    def _add(self, data: bytes) -> None:
        if not data:
            return
        if not self.marked and _MARK.search(bytes(self.unit[-_OVERLAP:]) + data if self.unit else data):
            self.marked = True
        if self.over:
            self.unit = bytearray(data[-_OVERLAP:])  # only what a split key needs
        elif len(self.unit) + len(data) > MAX_UNIT:
            self.over = True
            self.unit = bytearray(data[-_OVERLAP:])
        else:
            self.unit += data

    def _unit_done(self) -> None:
        if self.marked and not self.over and self.unit:
            body = _event_data(bytes(self.unit)) if self.sse else bytes(self.unit)
            try:
                errors_in(json.loads(body), self.errors)
            except ValueError:
                pass
        self.unit = bytearray()
        self.last = b""
        self.marked = self.over = False


def watch_upstream(ctx, flow: http.HTTPFlow) -> None:
    """Response header phase: read the upstream's answer for errors as it streams (telemetry on)."""
    resp = flow.response
    if resp is None or not enabled(ctx.route_name) or not resp.stream:
        return None  # off, or buffered: the telemetry addon reads a buffered answer itself
    if (header(resp.headers, "content-encoding") or "identity").strip().lower() != "identity":
        return None
    ctype = header(resp.headers, "content-type", "").split(";")[0].strip().lower()
    if ctype not in ("application/json", "text/event-stream"):
        return None
    watch = Watch(resp.stream, sse=ctype == "text/event-stream")
    resp.stream = watch
    _watches[flow] = watch
    return None


def upstream_errors(flow: http.HTTPFlow) -> dict[str, int | str] | None:
    """The errors the upstream's answer carried, by JSON-RPC id key (once per flow)."""
    watch = _watches.pop(flow, None)
    if watch is not None:
        return watch.errors
    resp = flow.response
    if resp is None or resp.stream or resp.raw_content is None:
        return None
    if header(resp.headers, "content-type", "").split(";")[0].strip().lower() != "application/json":
        return None
    if (header(resp.headers, "content-encoding") or "identity").strip().lower() != "identity":
        return None  # (not decompressed for telemetry, as in watch_upstream)
    out: dict[str, int | str] = {}
    body_errors(resp.raw_content, out)
    return out
