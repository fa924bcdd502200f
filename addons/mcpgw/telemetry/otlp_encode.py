"""OTLP trace export bytes written directly, without building protobuf message objects.

The OpenTelemetry exporter's own encoder (opentelemetry-exporter-otlp-proto-common) builds an
`opentelemetry-proto` message object per span, attribute and value and then serializes them:
about 55 us per span here, in the export thread, which holds the GIL the event loop needs. This
writes the same wire format (opentelemetry/proto/trace/v1/trace.proto, collector
ExportTraceServiceRequest) field by field, with the resource, the scope and every attribute key
encoded once and kept: a few microseconds per span. tests/unit/test_telemetry_encode.py decodes
its output with the official messages and compares it with the exporter's own encoding.

Spans with events or links (the gateway makes none) are left to the exporter's encoder."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_U32 = struct.Struct("<I")
_SMALL = [bytes((n,)) for n in range(128)]
# Span flags: "has is_remote" always, "is_remote" when the parent came from another process (as the
# exporter's encoder sets them: trace.proto SpanFlags).
_HAS_REMOTE, _IS_REMOTE = 0x100, 0x200
_FLAGS_LOCAL = b"\x85\x01" + _U32.pack(_HAS_REMOTE)
_FLAGS_REMOTE = b"\x85\x01" + _U32.pack(_HAS_REMOTE | _IS_REMOTE)
_KIND = {0: b"\x30\x01", 1: b"\x30\x02", 2: b"\x30\x03", 3: b"\x30\x04", 4: b"\x30\x05"}  # SDK value+1


def _varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 128 else _varint(n)) + payload


def _any_value(value: Any) -> bytes:
    """common.proto AnyValue, the same choice of variant as the exporter's _encode_value."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode("utf-8", "surrogatepass"))
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)  # int64: two's complement, 10 bytes if negative
    if isinstance(value, float):
        return b"\x21" + _F64.pack(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items()))
    raise TypeError(f"invalid attribute value type {type(value).__name__}")


# Most of the gateway's attributes repeat from span to span (method, route, consumer, rule,
# decision...): each attribute's whole field (tag, length, KeyValue) is kept per key and value,
# so a repeated one costs a dict lookup and an append. Per key at most MAX_VALUES values are kept:
# a key whose values differ on every span (a request or session id) fills its share and is then
# encoded each time, without pushing out the others.
_FIELDS: dict[bytes, dict[str, dict[Any, bytes]]] = {}  # tag -> key -> value -> field
MAX_VALUES = 256
MAX_KEYS = 512


def _key_value(key: str, value: Any) -> bytes:
    return _field(b"\x0a", key.encode("utf-8", "surrogatepass")) + _field(b"\x12", _any_value(value))


def attributes(tag: bytes, attrs: Mapping[str, Any] | None) -> bytes:
    """Each attribute as a repeated KeyValue field `tag`."""
    if not attrs:
        return b""
    by_key = _FIELDS.get(tag)
    if by_key is None:
        by_key = _FIELDS[tag] = {}
    out = []
    for key, value in attrs.items():
        # only exact str and int values are kept: a bool is an int subclass but True == 1 (it
        # is not `int`); floats are not kept (-0.0 == 0.0)
        cls = value.__class__
        values = by_key.get(key) if cls is str or cls is int else None
        if values is None and (cls is str or cls is int) and len(by_key) < MAX_KEYS:
            values = by_key[key] = {}
        field = values.get(value) if values is not None else None
        if field is None:
            field = _field(tag, _key_value(key, value))
            if values is not None and len(values) < MAX_VALUES:
                values[value] = field
        out.append(field)
    return b"".join(out)


# The encoded base of span_attributes.Attributes, by the base's identity (the base is kept, so
# the identity is checked too: an id may be reused once a base has been dropped).
_BASES: dict[int, tuple[dict, bytes]] = {}
MAX_BASES = 4096


def span_attributes(attrs: Mapping[str, Any]) -> bytes:
    """A span's attributes (field 9): the base of an Attributes from its kept encoding."""
    base = getattr(attrs, "base", None)
    if base is None:
        return attributes(b"\x4a", attrs)
    kept = _BASES.get(id(base))
    if kept is None or kept[0] is not base:
        if len(_BASES) >= MAX_BASES:
            _BASES.clear()
        kept = _BASES[id(base)] = (base, attributes(b"\x4a", base))
    return kept[1] + attributes(b"\x4a", attrs.own)


# A span's name field and its status field, by name and by (code, description): both repeat.
_NAMES: dict[str, bytes] = {}
_STATUSES: dict[tuple[int, str | None], bytes] = {}
MAX_NAMES = 1024


def _name_field(name: str) -> bytes:
    field = _NAMES.get(name)
    if field is None:
        field = _field(b"\x2a", name.encode("utf-8", "surrogatepass"))
        if len(_NAMES) < MAX_NAMES:
            _NAMES[name] = field
    return field


def _status_field(status) -> bytes:
    key = (status.status_code.value, status.description)
    field = _STATUSES.get(key)
    if field is None:
        body = b""
        if status.description:
            body += _field(b"\x12", status.description.encode("utf-8", "surrogatepass"))
        if key[0]:
            body += b"\x18" + _varint(key[0])
        field = _field(b"\x7a", body)
        if len(_STATUSES) < MAX_NAMES:
            _STATUSES[key] = field
    return field


def span(s) -> bytes:
    """trace.proto Span of an SDK ReadableSpan."""
    ctx, parent = s.context, s.parent
    parts = [b"\x0a\x10", ctx.trace_id.to_bytes(16, "big"), b"\x12\x08", ctx.span_id.to_bytes(8, "big")]
    if ctx.trace_state:
        parts.append(_field(b"\x1a", ",".join(f"{k}={v}" for k, v in ctx.trace_state.items()).encode()))
    if parent is not None:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    parts.append(_name_field(s.name))
    parts.append(_KIND[s.kind.value])
    if s.start_time:
        parts += (b"\x39", _U64.pack(s.start_time))
    if s.end_time:
        parts += (b"\x41", _U64.pack(s.end_time))
    attrs = getattr(s, "_attributes", None)  # (ReadableSpan.attributes wraps it in a new MappingProxyType)
    parts.append(span_attributes(attrs) if attrs is not None else attributes(b"\x4a", s.attributes))
    if s.dropped_attributes:
        parts += (b"\x50", _varint(s.dropped_attributes))
    status = s.status
    if status is not None:
        parts.append(_status_field(status))
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(parts)


class Encoder:
    """ExportTraceServiceRequest bytes for a batch; the resource and scope headers are encoded once."""

    def __init__(self) -> None:
        self._resources: dict[Any, bytes] = {}
        self._scopes: dict[Any, bytes] = {}

    def supports(self, spans: Sequence[Any]) -> bool:
        return all(not s.events and not s.links for s in spans)

    def _resource(self, resource) -> bytes:
        out = self._resources.get(resource)
        if out is None:
            out = self._resources[resource] = _field(b"\x0a", attributes(b"\x0a", resource.attributes))
        return out

    def _scope(self, scope) -> bytes:
        out = self._scopes.get(scope)
        if out is None:
            body = b""
            if scope is not None:
                if scope.name:
                    body += _field(b"\x0a", scope.name.encode())
                if scope.version:
                    body += _field(b"\x12", scope.version.encode())
                body += attributes(b"\x1a", scope.attributes)
            out = self._scopes[scope] = _field(b"\x0a", body)
        return out

    def encode(self, spans: Sequence[Any]) -> bytes:
        # grouped by identity (the gateway's spans share one resource and scope object):
        # Resource.__hash__ serializes its attributes to JSON on every call
        groups: dict[int, tuple[Any, dict[int, tuple[Any, list[bytes]]]]] = {}
        for s in spans:
            resource, scope = s.resource, s.instrumentation_scope or None
            scopes = groups.get(id(resource))
            if scopes is None:
                scopes = groups[id(resource)] = (resource, {})
            encoded = scopes[1].get(id(scope))
            if encoded is None:
                encoded = scopes[1][id(scope)] = (scope, [])
            encoded[1].append(span(s))
        out = []
        for resource, scopes in groups.values():
            body = [self._resource(resource)]
            for scope, encoded in scopes.values():
                scope_body = self._scope(scope) + b"".join(_field(b"\x12", e) for e in encoded)
                if scope is not None and scope.schema_url:
                    scope_body += _field(b"\x1a", scope.schema_url.encode())
                body.append(_field(b"\x12", scope_body))
            if resource.schema_url:
                body.append(_field(b"\x1a", resource.schema_url.encode()))
            out.append(_field(b"\x0a", b"".join(body)))
        return b"".join(out)
