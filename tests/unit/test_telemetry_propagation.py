"""Trace context in and out of the body and headers: what a client may put there, and what the
upstream receives."""

from __future__ import annotations

import json

import pytest
from mitmproxy.test import tutils
from opentelemetry import trace

from mcpgw.telemetry import conventions as conv, propagation
from mcpgw.telemetry.settings import TelemetrySettings

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
TP = f"00-{TID}-00f067aa0ba902b7-01"
OURS = {"traceparent": f"00-{TID}-1111111111111111-01"}


def request(body, **headers) -> "tutils.treq":
    req = tutils.treq(method=b"POST", content=json.dumps(body).encode() if not isinstance(body, bytes) else body)
    for k, v in headers.items():
        req.headers[k] = v
    return req


def span_context(ctx):
    return trace.get_current_span(ctx).get_span_context()


def test_header_context_is_read():
    sc = span_context(propagation.from_headers(request({}, traceparent=TP).headers))
    assert sc.is_valid and format(sc.trace_id, "032x") == TID and sc.is_remote


@pytest.mark.parametrize("value", ["garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
                                   f"00-{TID}-0000000000000000-01", f"ff-{TID}-00f067aa0ba902b7-01"])
def test_invalid_header_context_starts_a_new_trace(value):
    assert not span_context(propagation.from_headers(request({}, traceparent=value).headers)).is_valid


def test_two_traceparent_headers_are_both_ignored():
    req = request({})
    req.headers.add("traceparent", TP)
    req.headers.add("traceparent", f"00-{'a' * 32}-00f067aa0ba902b7-01")
    assert not span_context(propagation.from_headers(req.headers)).is_valid


@pytest.mark.parametrize("params", [None, [], {"_meta": "x"}, {"_meta": {"traceparent": 5}},
                                    {"_meta": {"traceparent": "nope"}}])
def test_meta_without_a_valid_context_is_none(params):
    msg = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    if params is not None:
        msg["params"] = params
    assert propagation.from_meta(msg) is None


def test_meta_context_is_read():
    ctx = propagation.from_meta({"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"_meta": {"traceparent": TP}}})
    assert format(span_context(ctx).trace_id, "032x") == TID


def test_inject_replaces_the_clients_context_and_keeps_other_meta():
    req = request({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "t", "_meta": {"traceparent": TP, "tracestate": "evil=1", "progressToken": 3}}})
    assert propagation.inject_body(req, [OURS])
    sent = json.loads(req.content)
    assert sent["params"]["_meta"] == {"progressToken": 3, **OURS}
    assert sent["params"]["name"] == "t"
    assert req.headers["content-length"] == str(len(req.content))


def test_inject_adds_params_to_a_message_without_any():
    req = request({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert propagation.inject_body(req, [OURS])
    assert json.loads(req.content)["params"] == {"_meta": OURS}


def test_inject_batch_per_message_and_skips_responses_and_positional_params():
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "a", "params": {}},
             {"jsonrpc": "2.0", "id": 2, "result": {}},
             {"jsonrpc": "2.0", "id": 3, "method": "b", "params": [1, 2]},
             {"jsonrpc": "2.0", "id": 4, "method": "c", "params": {}}]
    other = {"traceparent": f"00-{TID}-2222222222222222-01"}
    req = request(batch)
    assert propagation.inject_body(req, [OURS, OURS, OURS, other])
    sent = json.loads(req.content)
    assert sent[0]["params"]["_meta"] == OURS and sent[3]["params"]["_meta"] == other
    assert sent[1] == batch[1] and sent[2] == batch[2]


def test_inject_leaves_an_unparseable_or_reshaped_body_alone():
    dup = b'{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}'  # duplicate keys: the strict parser refuses
    req = request(dup)
    assert not propagation.inject_body(req, [OURS])
    assert req.content == dup
    req = request({"jsonrpc": "2.0", "id": 1, "method": "a"})
    assert not propagation.inject_body(req, [OURS, OURS])  # not the shape the spans were made for


def test_headers_replaced_not_added():
    req = request({}, traceparent=TP, tracestate="evil=1")
    propagation.set_headers(req, OURS)
    assert req.headers.get_all("traceparent") == [OURS["traceparent"]]
    assert "tracestate" not in req.headers


def test_propagate_reuses_the_gateways_parse_without_changing_it():
    from mcpgw.protocol.jsonrpc import parse_strict

    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "t", "_meta": {"traceparent": TP, "progressToken": 3}}}
    req = request(body, traceparent=TP, tracestate="evil=1")
    parsed = parse_strict(req.raw_content)
    judged = json.loads(json.dumps([m.obj for m in parsed[0]]))
    propagation.propagate(req, OURS, [OURS], parsed)
    assert [m.obj for m in parsed[0]] == judged  # what the decisions (and the audit record) read is untouched
    sent = json.loads(req.content)
    assert sent["params"] == {"name": "t", "_meta": {"progressToken": 3, **OURS}}
    assert req.headers.get_all("traceparent") == [OURS["traceparent"]] and "tracestate" not in req.headers
    assert req.headers.get_all("content-length") == [str(len(req.content))]
    again = request(body, traceparent=TP, tracestate="evil=1")
    propagation.propagate(again, OURS, [OURS])  # parsed from the body: the same bytes either way
    assert again.content == req.content


def test_propagate_headers_only_and_a_chunked_body():
    req = request({"jsonrpc": "2.0", "id": 1, "method": "ping"}, tracestate="evil=1")
    before = req.content
    propagation.propagate(req, {**OURS, "tracestate": "gw=1"}, None)
    assert req.content == before and req.headers["tracestate"] == "gw=1"
    req = request({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    del req.headers["content-length"]
    req.headers["transfer-encoding"] = "chunked"
    propagation.propagate(req, OURS, [OURS])
    assert json.loads(req.content)["params"] == {"_meta": OURS} and "content-length" not in req.headers


def test_telemetry_reparses_a_body_a_phase_rewrote(tmp_path):
    """The gateway's parse is reused only while the body is the very object it was made from."""
    from mcpgw.context import FlowContext
    from mcpgw.protocol.jsonrpc import parse_strict
    from mcpgw.telemetry import addon

    req = request({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "judged"}})
    messages, is_batch = parse_strict(req.raw_content)
    fctx = FlowContext.__new__(FlowContext)
    fctx.parsed = (req.raw_content, tuple(messages), is_batch)
    req.content = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "rewritten"}}).encode()
    parsed = addon.parsed_for(fctx, req)
    assert parsed is None  # a new body: parsed again, so what is forwarded is what the phase wrote
    propagation.propagate(req, OURS, [OURS], parsed)
    assert json.loads(req.content)["params"]["name"] == "rewritten"
    fctx.parsed = (req.raw_content, tuple(messages), is_batch)
    assert addon.parsed_for(fctx, req) == (messages, is_batch)  # the body it was made from: reused


def test_settings_endpoint_rules():
    assert TelemetrySettings(endpoint="http://c:4318/").signal_url("traces") == "http://c:4318/v1/traces"
    assert TelemetrySettings(endpoint="http://c:4318/v1/traces").signal_url("metrics") == "http://c:4318/v1/metrics"
    for bad in ("ftp://c", "c:4318", "http://"):
        with pytest.raises(ValueError):
            TelemetrySettings(endpoint=bad)
    with pytest.raises(ValueError):
        TelemetrySettings(endpoint="http://c", sampling=1.5)


def record(**over):
    base = {"route": "r", "mode": "gateway", "consumer": None, "session": None, "decision": "allow", "rule": None,
            "reason": None, "policy": "p", "client": "127.0.0.1", "primitive": "tool", "name": "search",
            "http": {"method": "POST", "status": 200, "upstream_status": 200},
            "jsonrpc": {"id": 1, "method": "tools/call", "kind": "request"}}
    return {**base, **over}


def test_span_names_bounded():
    assert conv.span_name(record()) == "tools/call search"
    assert conv.span_name(record(decision="deny")) == "tools/call"  # a denied name is the client's text
    assert conv.span_name(record(jsonrpc={"id": 1, "method": "x" * 1000, "kind": "request"}, primitive=None)) == "_OTHER"
    assert conv.span_name(record(jsonrpc=None, primitive=None)) == "POST"


def test_attributes_never_hold_the_session_id_and_are_bounded():
    attrs = conv.common_attributes(record(session="secret-session-id", name="n" * 5000), "2025-06-18", "1.1")
    assert attrs["mcp.session.id"] == conv.session_hash("secret-session-id") != "secret-session-id"
    assert len(attrs["gen_ai.tool.name"]) <= conv.MAX_ATTR + 3


def test_error_type():
    assert conv.error_type(record(), None) is None
    assert conv.error_type(record(decision="deny"), -32602) == "-32602"
    assert conv.error_type(record(decision="deny", http={"method": "POST", "status": 401, "upstream_status": None}),
                           None) == "401"
    assert conv.error_type(record(error="refused", http={"method": "POST", "status": None, "upstream_status": None}),
                           None) == "upstream_error"


def test_metric_attributes_bounded():
    attrs = conv.metric_attributes(record(jsonrpc={"id": 1, "method": "zzz", "kind": "request"}), None, None, "1999")
    assert attrs["mcp.method.name"] == "_OTHER" and "mcp.protocol.version" not in attrs


SPLICE_CASES = [
    b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"t","arguments":{"q":"x"}}}',
    b'{"method":"tools/call","params":{"name":"t"},"jsonrpc":"2.0","id":1}',  # the SDK's member order
    b' {\n "id" : 1 ,\t"method":"tools/call" ,\r\n "params" :\n {"name":"t"} , "jsonrpc":"2.0"}\n',
    b'{"jsonrpc":"2.0","id":"a","method":"x","params":{}}',
    b'{"jsonrpc":"2.0","id":1,"method":"x","par\\u0061ms":{"a":1}}',  # an escaped spelling of the key
    b'{"jsonrpc":"2.0","id":{"params":{}}, "method":"x","params":{"b":[1,{"params":2}]}}',  # decoys before it
    b'{"jsonrpc":"2.0","id":1,"method":"x \\" \\"params\\":{","params":{"s":"\\"params\\":{}"}}',
    '{"jsonrpc":"2.0","id":1,"method":"r\u00e9sum\u00e9","params":{"t":"\u2603 \U0001f600"}}'.encode(),
]


@pytest.mark.parametrize("raw", SPLICE_CASES)
def test_meta_spliced_into_the_judged_bytes(raw):
    """The context goes in as params' first member; every byte the gateway judged is kept as it was."""
    obj = json.loads(raw)
    spliced = propagation.splice_meta(raw, obj, OURS)
    assert spliced is not None
    expected = {**obj, "params": {"_meta": OURS, **obj["params"]}}
    assert json.loads(spliced) == expected
    member = b'"_meta":' + json.dumps(OURS, separators=(",", ":")).encode() + (b"," if obj["params"] else b"")
    at = spliced.index(member)
    assert spliced[:at] + spliced[at + len(member):] == raw


@pytest.mark.parametrize("raw", [
    b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"a":1}}}',  # its own _meta: rebuilt
    b'{"jsonrpc":"2.0","id":1,"method":"x","params":[1,2]}',  # positional params
    b'{"jsonrpc":"2.0","id":1,"method":"x"}',  # no params
    b'{"jsonrpc":"2.0","id":1,"result":{}}',  # a response
    b'\xef\xbb\xbf{"jsonrpc":"2.0","id":1,"method":"x","params":{}}',  # a BOM
    '{"jsonrpc":"2.0","id":1,"method":"x","params":{}}'.encode("utf-16"),
])
def test_meta_not_spliced_where_the_walk_does_not_apply(raw):
    assert propagation.splice_meta(raw, json.loads(raw), OURS) is None


def test_a_body_that_is_not_the_parse_s_is_not_spliced():
    """splice_meta trusts `obj` only for its shape: bytes that do not walk as the JSON it describes
    are left to the rebuild."""
    obj = {"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"a": 1}}
    for raw in (b'{"jsonrpc":"2.0","id":1,"method":"x","params"', b'{"jsonrpc":"2.0","id":1 "params":{}}',
                b'{"jsonrpc":"2.0","id":1,"method":"x","params":7}', b'["params"]', b''):
        assert propagation.splice_meta(raw, obj, OURS) is None


def test_inject_splices_a_plain_request_and_rebuilds_the_rest():
    raw = b'{"method":"tools/call","params":{"name":"t"},"jsonrpc":"2.0","id":1}'
    req = request(raw)
    assert propagation.inject_body(req, [OURS])
    assert req.content == b'{"method":"tools/call","params":{"_meta":' + json.dumps(OURS, separators=(",", ":")).encode() \
        + b',"name":"t"},"jsonrpc":"2.0","id":1}'
    assert req.headers["content-length"] == str(len(req.content))
