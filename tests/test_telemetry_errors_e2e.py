"""OpenTelemetry end to end, the upstream's errors and session durations: a real mitmdump exporting
to the OTLP receiver of test_telemetry_e2e.py, the demo upstream answering SSE and (another one)
JSON. A JSON-RPC error the upstream answers gives error.type and rpc.response.status_code (its
code) on both spans; a tool result with isError gives error.type tool_error; a session opened and
deleted through the gateway gives mcp.server.session.duration and mcp.client.session.duration."""

from __future__ import annotations

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.support.gateway import DemoUpstream, Gateway, jsonrpc, parse_mcp_body
from tests.test_telemetry_e2e import FAST_EXPORT, Receiver, open_session, trace_id, traceparent
from tests.test_telemetry_e2e import policy as base_policy

pytestmark = pytest.mark.e2e

MISSING_TOOL = "no_such_tool"  # allowed by the policy, unknown to the upstream: it answers isError


def policy(upstream: DemoUpstream) -> dict:
    """test_telemetry_e2e's policy with every tool allowed to developers (the upstream decides)."""
    p = base_policy(upstream)
    p["routes"]["github-mcp"]["acl"] = {"consumer_identifier": "username", "include_consumer_groups": True,
                                        "default_acl": [{"scope": "tools", "allow": ["developer"]}]}
    return p


@pytest.fixture(scope="module", params=["sse", "json"])
def setup(request, tmp_path_factory):
    """A gateway and its own receiver, over an upstream answering SSE, then one answering JSON."""
    workdir = tmp_path_factory.mktemp(f"telemetry-errors-{request.param}")
    receiver = Receiver()
    upstream = DemoUpstream(workdir, *(["--json-response"] if request.param == "json" else []))
    gw = Gateway(workdir, policy(upstream), intercept=False, env=FAST_EXPORT,
                 extra=["--set", f"mcp_otlp={receiver.url}"])
    yield gw, request.param, receiver
    gw.stop()
    upstream.stop()
    receiver.stop()


def spans_of(receiver: Receiver, tid: str) -> tuple[dict, dict]:
    server, = receiver.wait_spans(lambda s: s["trace_id"] == tid and s["kind"] == Span.SPAN_KIND_SERVER)
    client, = receiver.wait_spans(lambda s: s["trace_id"] == tid and s["kind"] == Span.SPAN_KIND_CLIENT)
    return server, client


def post(client: httpx.Client, gw: Gateway, headers: dict, body: dict, tid: str) -> httpx.Response:
    return client.post(gw.url("/github-mcp"), headers={**headers, "traceparent": traceparent(tid)}, json=body)


def test_upstream_jsonrpc_error_on_both_spans(setup):
    gw, kind, receiver = setup
    tid = trace_id()
    with httpx.Client(timeout=30) as client:
        headers = open_session(client, gw.url("/github-mcp"))
        resp = post(client, gw, headers, jsonrpc("prompts/get", {"name": "no-such-prompt"}, id=11), tid)
    assert resp.headers["content-type"].startswith("application/json" if kind == "json" else "text/event-stream")
    assert parse_mcp_body(resp)[0]["error"]["code"] == -32602  # the client gets the upstream's answer untouched
    server, client_span = spans_of(receiver, tid)
    for span in (server, client_span):
        assert span["status"] == Status.STATUS_CODE_ERROR
        assert span["attrs"]["error.type"] == span["attrs"]["rpc.response.status_code"] == "-32602"
    assert server["attrs"]["mcpgw.decision"] == "allow"  # the gateway let it through; the upstream refused


def test_tool_result_with_is_error_is_a_tool_error(setup):
    gw, _, receiver = setup
    tid = trace_id()
    with httpx.Client(timeout=30) as client:
        headers = open_session(client, gw.url("/github-mcp"))
        resp = post(client, gw, headers, jsonrpc("tools/call", {"name": MISSING_TOOL, "arguments": {}}, id=12), tid)
    assert parse_mcp_body(resp)[0]["result"]["isError"] is True
    server, client_span = spans_of(receiver, tid)
    for span in (server, client_span):
        assert span["status"] == Status.STATUS_CODE_ERROR
        assert span["attrs"]["error.type"] == "tool_error"
        assert "rpc.response.status_code" not in span["attrs"]  # a JSON-RPC success carrying a tool error


def test_successful_call_is_no_error(setup):
    gw, _, receiver = setup
    tid = trace_id()
    with httpx.Client(timeout=30) as client:
        headers = open_session(client, gw.url("/github-mcp"))
        # the result text names both keys (an echo of the query): inside a JSON string, they are no error
        args = {"query": '"error": {"code": 1}, "isError": true'}
        resp = post(client, gw, headers, jsonrpc("tools/call", {"name": "search_repositories", "arguments": args},
                                                 id=13), tid)
    assert "result" in parse_mcp_body(resp)[0]
    server, client_span = spans_of(receiver, tid)
    for span in (server, client_span):
        assert span["status"] != Status.STATUS_CODE_ERROR and "error.type" not in span["attrs"]


def _session_count(receiver: Receiver, name: str) -> tuple[int, dict]:
    """The latest cumulative count of a session histogram and its attributes ((0, {}) before any)."""
    points = [p for m in receiver.metrics.get(name, []) for p in m.histogram.data_points]
    if not points:
        return 0, {}
    return points[-1].count, {a.key: a.value.string_value or a.value.int_value for a in points[-1].attributes}


def _wait_count(receiver: Receiver, name: str, at_least: int) -> tuple[int, dict]:
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        count, attrs = _session_count(receiver, name)
        if count >= at_least:
            return count, attrs
        time.sleep(0.1)
    raise AssertionError(f"{name}: count {count} < {at_least}; metrics: {sorted(receiver.metrics)}")


def test_session_duration_metrics(setup):
    gw, _, receiver = setup
    before = _session_count(receiver, "mcp.server.session.duration")[0]
    with httpx.Client(timeout=30) as client:
        headers = open_session(client, gw.url("/github-mcp"))
        # a DELETE of a session the gateway never saw begin is no session that ended
        assert client.delete(gw.url("/github-mcp"), headers={**headers, "mcp-session-id": "f" * 32}).status_code >= 400
        assert client.delete(gw.url("/github-mcp"), headers=headers).status_code < 300
    count, attrs = _wait_count(receiver, "mcp.server.session.duration", before + 1)
    assert count == before + 1
    assert attrs["network.transport"] == "tcp" and attrs["mcpgw.route"] == "github-mcp"
    assert attrs["mcp.protocol.version"] == "2025-06-18"
    assert "error.type" not in attrs and "server.address" not in attrs
    _, client_attrs = _wait_count(receiver, "mcp.client.session.duration", before + 1)
    assert client_attrs["server.address"] == "127.0.0.1"
    assert headers["mcp-session-id"] not in str(receiver.metrics)
