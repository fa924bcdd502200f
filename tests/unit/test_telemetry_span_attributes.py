"""Span attributes built from a kept base (telemetry/span_attributes.py) are exactly those built
from the record itself, whatever came before: no attribute of one caller, route, decision or
message ever reaches another's span; and the encoder's kept base encodes as the whole dict does."""

from __future__ import annotations

import itertools
import random

from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from mcpgw.telemetry import conventions as conv, otlp_encode, span_attributes


def fresh_server(record, version, http_version, own):
    attrs = conv.common_attributes(record, version, http_version)
    attrs.update(conv.gateway_attributes(record))
    if record.get("client"):
        attrs["client.address"] = record["client"]
    attrs.update(own)
    return attrs


def fresh_client(record, upstream, own):
    attrs = conv.client_attributes(record)
    attrs["server.address"], attrs["server.port"] = upstream
    if record["http"]["upstream_status"] is not None:
        attrs["http.response.status_code"] = record["http"]["upstream_status"]
    attrs.update(own)
    return attrs


CHOICES = {
    "mode": ["gateway", "intercept"], "decision": ["allow", "deny", "would_deny"], "route": ["a", "b", None],
    "rule": ["acl.tools[x].allow", "acl.default_acl[0].deny", None], "reason": ["acl", "shape", None],
    "policy": ["0123456789abcdef", None], "primitive": ["tool", "prompt", "resource", None],
    "name": ["search", "push_files", "x" * 300, None, 5], "client": ["127.0.0.1", "10.0.0.2", None],
    "session": ["s1", "s2", None],
    "consumer": [None, {"name": "dev", "groups": ["developer"], "method": "key-auth"},
                 {"name": "dev", "groups": ["admin"], "method": "key-auth"},
                 {"name": "ops", "groups": [], "method": "oauth"}],
    "jsonrpc": [None, {"kind": "request", "method": "tools/call", "id": 7}, {"kind": "request", "method": "tools/call", "id": "7"},
                {"kind": "request", "method": "tools/list", "id": 8}, {"kind": "notification", "method": "x"}],
    "status": [200, 403, None], "upstream_status": [200, 502, None],
}


def records(n: int, seed: int):
    rng = random.Random(seed)
    for _ in range(n):
        r = {k: rng.choice(v) for k, v in CHOICES.items() if k not in ("status", "upstream_status")}
        r["http"] = {"status": rng.choice(CHOICES["status"]), "upstream_status": rng.choice(CHOICES["upstream_status"]),
                     "method": "POST"}
        yield r


def test_kept_bases_give_the_record_s_own_attributes():
    span_attributes._BASES.clear()
    seen = 0
    messages = list(zip(records(300, 1), itertools.cycle(["2025-06-18", None, "x" * 300]),
                        itertools.cycle(["1.1", "2", ""])))
    for record, version, http_version in messages * 10:  # the same facts again: from kept bases
        record = {**record, "jsonrpc": record["jsonrpc"] and {**record["jsonrpc"], "id": seen}}
        own = {"error.type": "403"} if record["http"]["status"] == 403 else {}
        got = span_attributes.server(record, version, http_version, dict(own))
        assert dict(got) == fresh_server(record, version, http_version, own)
        upstream = ("127.0.0.1", 4000 + len(str(record.get("route"))))
        assert dict(span_attributes.client(record, upstream, {})) == fresh_client(record, upstream, {})
        seen += 1
    assert len(span_attributes._BASES) <= 2 * len(messages) < seen  # bases were reused, not built per message


def variants(record):
    """The record with one fact changed, for every fact and value."""
    for key, values in CHOICES.items():
        for value in values:
            if key in ("status", "upstream_status"):
                yield {**record, "http": {**record["http"], key: value}}
            else:
                yield {**record, key: value}


def test_a_record_differing_in_one_fact_gets_its_own_attributes():
    span_attributes._BASES.clear()
    for record in records(40, 5):
        for version, http_version in (("2025-06-18", "1.1"), (None, "1.1"), ("2025-06-18", "2")):
            span_attributes.server(record, "2025-06-18", "1.1", {})  # kept first
            span_attributes.client(record, ("h", 1), {})
            for other in variants(record):
                assert dict(span_attributes.server(other, version, http_version, {})) == \
                    fresh_server(other, version, http_version, {})
                for upstream in (("h", 1), ("h", 2), ("g", 1)):
                    assert dict(span_attributes.client(other, upstream, {})) == fresh_client(other, upstream, {})


def test_own_never_lands_in_a_base():
    span_attributes._BASES.clear()
    a, b = records(2, 2)
    b = {**a, "jsonrpc": {**(a["jsonrpc"] or {"kind": "request", "method": "m"}), "id": 99}, "session": "other"}
    first = span_attributes.server(a, "2025-06-18", "1.1", {"error.type": "x"})
    second = span_attributes.server(b, "2025-06-18", "1.1", {})
    assert "error.type" not in second and second.get("jsonrpc.request.id") == "99"
    assert second["mcp.session.id"] == conv.session_hash("other") != first.get("mcp.session.id")
    for base in span_attributes._BASES.values():
        assert not set(span_attributes.SERVER_OWN) & base.keys() or base.get("mcp.method.name") is None


def test_an_own_value_replacing_a_base_one_is_encoded_whole():
    record = next(records(1, 3))
    record.update(primitive="tool", name="search")
    attrs = span_attributes.server(record, None, "1.1", {"gen_ai.operation.name": "chat"})
    assert attrs["gen_ai.operation.name"] == "chat" and attrs.base is None


def decode(encoded: bytes) -> dict:
    """The attributes of a Span message holding only them (field 9, as a span carries them)."""
    span = SpanProto.FromString(encoded)
    out = {}
    for kv in span.attributes:
        v = kv.value
        kind = v.WhichOneof("value")
        out[kv.key] = list(x.string_value for x in v.array_value.values) if kind == "array_value" else getattr(v, kind)
    return out


def test_kept_encoding_is_the_whole_dict_s():
    span_attributes._BASES.clear()
    otlp_encode._BASES.clear()
    for record in records(500, 4):
        attrs = span_attributes.server(record, "2025-06-18", "1.1", {})
        assert decode(otlp_encode.span_attributes(attrs)) == decode(otlp_encode.attributes(b"\x4a", dict(attrs)))
        assert len(otlp_encode.span_attributes(attrs)) == len(otlp_encode.attributes(b"\x4a", dict(attrs)))
    assert otlp_encode._BASES  # the bases' encodings were kept
