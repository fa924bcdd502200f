"""The message layer: apply per-message transforms to server -> client JSON-RPC traffic, whatever
carries it (a JSON body, a batch array, an SSE event on a POST's stream or on the GET stream).

SSE is processed event by event as chunks arrive, never buffered whole. Events a transform does
not change are passed on byte for byte; changed ones are re-encoded. A transform that fails turns
its message into a JSON-RPC error (fail closed: an unfiltered list never slips through)."""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import replace
from typing import Any, Callable

from .sse import SSEEvent, SSEParser

log = logging.getLogger("mcpgw.messages")

MessageTransform = Callable[[dict], dict]
EventTransform = Callable[[SSEEvent], SSEEvent]

_WITHHELD = "The gateway could not process this upstream message; it was withheld."


# Without the circular-reference check: what is encoded here was parsed from JSON and rewritten
# by transforms that build trees, so it holds no cycle, and the check (a dict entry for every
# container) cost a filtered 1,000-tool list 3 of its 7 ms of encoding.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode


def apply_transforms(obj: Any, transforms: list[MessageTransform]) -> Any:
    """Run transforms over one message or each element of a batch. Returns `obj` itself when
    nothing changed (a transform returns its argument to mean 'unchanged')."""
    if isinstance(obj, list):
        out = [apply_transforms(m, transforms) for m in obj]
        return obj if all(a is b for a, b in zip(out, obj)) else out
    if not isinstance(obj, dict):
        return obj
    current = obj
    for t in transforms:
        try:
            current = t(current)
        except Exception:  # fail closed: the message is replaced by an error, never passed unchecked
            log.exception("message transform %s failed; withholding the message", getattr(t, "__name__", t))
            return {"jsonrpc": "2.0", "id": obj.get("id"), "error": {"code": -32603, "message": _WITHHELD}}
    return current


def still_needed(data: bytes, transforms: list[MessageTransform]) -> list[MessageTransform]:
    """The transforms that must see the messages parsed from `data`. A transform may have a
    method `passes(data: bytes) -> bool`: True when, from the raw bytes alone, it knows it would
    leave those messages (and what earlier transforms make of them: they only remove or refuse)
    unchanged; it is then not called for them, and when none is left the bytes are not parsed at
    all, the cost of a large answer nothing touches. One that fails to answer is called."""
    rest = []
    for t in transforms:
        screen = getattr(t, "passes", None)
        try:
            passed = screen is not None and screen(data)
        except Exception:  # the transform itself decides, and fails closed there
            log.exception("pre-screen of %s failed; parsing the message", getattr(t, "__name__", t))
            passed = False
        if not passed:
            rest.append(t)
    return rest


def transform_json_body(body: bytes, transforms: list[MessageTransform]) -> bytes | None:
    """A buffered JSON response body: the new body, or None when unchanged or not JSON."""
    transforms = still_needed(body, transforms)
    if not transforms:
        return None
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        try:  # invalid UTF-8: a client decoding with replacement (as browsers do) still reads the JSON
            obj = json.loads(body.decode("utf-8", "replace"))
        except ValueError:
            return None  # not JSON to anyone
        new = apply_transforms(obj, transforms)
        return _dumps(new).encode()  # re-encoded even if unchanged: never the bytes no check could read
    new = apply_transforms(obj, transforms)
    return None if new is obj else _dumps(new).encode()


def message_event_transform(transforms: list[MessageTransform]) -> EventTransform:
    """Lift message transforms to SSE events carrying JSON-RPC (`event: message` or unnamed)."""

    def transform_event(ev: SSEEvent) -> SSEEvent:
        if ev.data is None or ev.event not in (None, "", "message"):
            return ev
        needed = still_needed(ev.data.encode("utf-8", "surrogatepass"), transforms)
        if not needed:
            return ev
        try:
            obj = json.loads(ev.data)
        except ValueError:
            return ev
        new = apply_transforms(obj, needed)
        return ev if new is obj else replace(ev, data=_dumps(new), raw=b"")

    # An event's raw bytes hold its data lines whole, between field names and line breaks that no
    # transform's screen looks for: bytes that pass every screen are passed without being decoded.
    transform_event.passes_raw = lambda raw: not still_needed(raw, transforms)  # type: ignore[attr-defined]
    return transform_event


class _Decoder:
    """Incremental Content-Encoding decoder, so a compressed stream stays a stream."""

    def __init__(self, encoding: str):
        enc = encoding.strip().lower()
        if enc in ("gzip", "x-gzip"):
            z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self.decode, self.flush = z.decompress, z.flush
        elif enc == "deflate":
            z = zlib.decompressobj()
            self.decode, self.flush = z.decompress, z.flush
        elif enc == "br":
            import brotli

            b = brotli.Decompressor()
            self.decode, self.flush = b.process, (lambda: b"")
        elif enc == "zstd":
            import zstandard

            d = zstandard.ZstdDecompressor().decompressobj()
            self.decode, self.flush = d.decompress, d.flush
        else:
            raise ValueError(f"unsupported Content-Encoding {encoding!r}")


def can_decode(encoding: str | None) -> bool:
    if not encoding or encoding.strip().lower() == "identity":
        return True
    try:
        _Decoder(encoding)
    except (ValueError, ImportError):
        return False
    return True


class SSEStream:
    """`flow.response.stream` callable: decode, split into events, transform, re-emit.

    mitmproxy calls it once per received chunk and once with b"" at the end."""

    def __init__(self, transforms: list[EventTransform], content_encoding: str | None = None,
                 max_event_size: int = 16 * 1024 * 1024, on_event: Callable[[SSEEvent], None] | None = None):
        self.transforms = transforms
        self.parser = SSEParser(max_event_size=max_event_size)
        enc = (content_encoding or "").strip().lower()
        self.decoder = _Decoder(enc) if enc and enc != "identity" else None
        self.on_event = on_event
        self.failed = False
        screens = [getattr(t, "passes_raw", None) for t in transforms]
        if transforms and on_event is None and all(screens):
            # every transform can judge an event from its raw bytes: those that certainly pass
            # come back from the parser as bytes, never decoded, split or rebuilt
            self.parser.screen = lambda raw: raw if all(s(raw) for s in screens) else None

    def __call__(self, chunk: bytes) -> list[bytes]:
        # A list, never b"": mitmproxy sends each element as a body chunk, and an empty chunk
        # is the HTTP/1.1 chunked-encoding terminator, which would end the response early.
        if self.failed:
            return []
        try:
            if chunk:
                events = self.parser.feed(self.decoder.decode(chunk) if self.decoder else chunk)
            else:
                events = self.parser.feed(self.decoder.flush()) if self.decoder else []
                events += self.parser.flush()
            return [data for data in map(self._emit, events) if data]
        except Exception:  # fail closed: the stream ends with a withheld notice, nothing unchecked goes on
            # Fail closed: stop relaying rather than pass on what could not be checked.
            log.exception("SSE stream processing failed; ending the stream to the client")
            self.failed = True
            note = {"jsonrpc": "2.0", "method": "notifications/message",
                    "params": {"level": "error", "logger": "mcp-gateway", "data": _WITHHELD}}
            return [b"event: message\ndata: " + _dumps(note).encode() + b"\n\n"]

    def _emit(self, ev: SSEEvent | bytes) -> bytes:
        if type(ev) is bytes:  # screened: passes as it came
            return ev
        original = ev
        for t in self.transforms:
            ev = t(ev)
        if self.on_event is not None:
            self.on_event(ev)
        return ev.raw if ev is original and ev.raw else ev.encode()
