"""OpenTelemetry end to end: a real mitmdump with the gateway exporting over OTLP/HTTP to a real
receiver in this test (an HTTP server decoding the protobuf with the official opentelemetry-proto
messages), the demo upstream recording the trace context it receives, raw HTTP clients sending
their own trace context in the header and in params._meta."""

from __future__ import annotations

import gzip
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (ExportMetricsServiceRequest,
                                                                          ExportMetricsServiceResponse)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, jsonrpc, parse_mcp_body
from tests.support.procs import free_port

pytestmark = pytest.mark.e2e

KEY = "dev-api-key-telemetry-5b1e"
ALLOWED, DENIED = "search_repositories", "push_files"
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRIC_EXPORT_INTERVAL": "300",
               "OTEL_EXPORTER_OTLP_TIMEOUT": "2"}


def traced_gateway(workdir, policy, receiver: "Receiver", **env: str) -> Gateway:
    """A gateway exporting to `receiver` without delay (FAST_EXPORT), `env` beside it."""
    return Gateway(workdir, policy, intercept=False, env={**FAST_EXPORT, **env},
                   extra=["--set", f"mcp_otlp={receiver.url}"])


class Receiver:
    """An OTLP/HTTP receiver: decodes every export request and keeps spans and metric names."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.metrics: dict[str, list[Any]] = {}
        self.resources: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                assert self.headers.get("content-type") == "application/x-protobuf"
                if self.path == "/v1/traces":
                    receiver._traces(body)
                    answer = ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    receiver._metrics(body)
                    answer = ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _traces(self, body: bytes) -> None:
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            self.resources.append(resource)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append({"name": s.name, "kind": s.kind, "trace_id": s.trace_id.hex(),
                                       "span_id": s.span_id.hex(), "parent": s.parent_span_id.hex(),
                                       "status": s.status.code, "start": s.start_time_unix_nano,
                                       "end": s.end_time_unix_nano,
                                       "attrs": {a.key: _value(a.value) for a in s.attributes}})

    def _metrics(self, body: bytes) -> None:
        req = ExportMetricsServiceRequest.FromString(body)
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    self.metrics.setdefault(m.name, []).append(m)

    def wait_spans(self, predicate, count: int = 1, timeout: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [s for s in list(self.spans) if predicate(s)]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"expected {count} span(s); received {[(s['name'], s['trace_id']) for s in self.spans]}")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(v) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def policy(upstream: DemoUpstream) -> dict:
    return {
        "consumer_groups": ["developer"],
        "consumers": {"dev-user": {"groups": ["developer"], "keys": [KEY]}},
        "services": {"github": {"url": upstream.url}},
        "routes": {"github-mcp": {
            "service": "github", "paths": ["/github-mcp"], "key_auth": {"hide_credentials": True},
            "acl": {"consumer_identifier": "username", "include_consumer_groups": True,
                    "default_acl": [{"scope": "tools", "deny": ["developer"]}],
                    "tools": [{"name": ALLOWED, "acl": {"allow": ["developer"]}}]}}},
    }


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, receiver):
    workdir = tmp_path_factory.mktemp("telemetry")
    upstream = DemoUpstream(workdir)
    metrics_port = free_port()
    gw = Gateway(workdir, policy(upstream), intercept=False, env=FAST_EXPORT,
                 extra=["--set", f"mcp_otlp={receiver.url}", "--set", "mcp_otlp_service=gw-under-test",
                        "--set", f"mcp_metrics={metrics_port}"])
    yield gw, upstream
    gw.stop()
    upstream.stop()


def trace_id() -> str:
    import secrets

    return secrets.token_hex(16)


def traceparent(tid: str, parent: str = "00f067aa0ba902b7") -> str:
    return f"00-{tid}-{parent}-01"


def open_session(client: httpx.Client, url: str) -> dict[str, str]:
    headers = {**MCP_HEADERS, "apikey": KEY}
    init = client.post(url, headers=headers, json=jsonrpc("initialize", {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}))
    assert init.status_code == 200, init.text
    headers |= {"mcp-session-id": init.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
    assert client.post(url, headers=headers, json=jsonrpc("notifications/initialized", id=None)).status_code == 202
    return headers


def call(name: str, **meta: str) -> dict:
    params: dict[str, Any] = {"name": name, "arguments": {"query": "q"} if name == ALLOWED else
                              {"owner": "o", "repo": "r", "branch": "b", "files": [], "message": "m"}}
    if meta:
        params["_meta"] = meta
    return jsonrpc("tools/call", params, id=7)


def test_allowed_call_header_context_continues_into_upstream(setup, receiver):
    gw, upstream = setup
    tid = trace_id()
    with httpx.Client(timeout=30) as client:
        headers = open_session(client, gw.url("/github-mcp"))
        upstream.reset()
        resp = client.post(gw.url("/github-mcp"), headers={**headers, "traceparent": traceparent(tid)},
                           json=call(ALLOWED))
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")  # the SSE answer, streamed through
    assert "result" in parse_mcp_body(resp)[0]
    server, = receiver.wait_spans(lambda s: s["trace_id"] == tid and s["kind"] == Span.SPAN_KIND_SERVER)
    client_span, = receiver.wait_spans(lambda s: s["trace_id"] == tid and s["kind"] == Span.SPAN_KIND_CLIENT)
    assert server["parent"] == "00f067aa0ba902b7"  # the client's span is the parent
    assert client_span["parent"] == server["span_id"]
    assert server["name"] == client_span["name"] == f"tools/call {ALLOWED}"
    a = server["attrs"]
    assert a["mcp.method.name"] == "tools/call" and a["gen_ai.tool.name"] == ALLOWED
    assert a["gen_ai.operation.name"] == "execute_tool" and a["jsonrpc.request.id"] == "7"
    assert a["mcp.protocol.version"] == "2025-06-18" and a["network.transport"] == "tcp"
    assert a["mcpgw.route"] == "github-mcp" and a["mcpgw.consumer"] == "dev-user"
    assert a["mcpgw.consumer.groups"] == ["developer"] and a["mcpgw.decision"] == "allow"
    assert server["status"] != Status.STATUS_CODE_ERROR and "error.type" not in a
    session = headers["mcp-session-id"]
    assert len(a["mcp.session.id"]) == 16 and session not in str(receiver.spans)  # hashed, never the bearer value
    assert KEY not in str(receiver.spans)
    assert client_span["attrs"]["server.address"] == "127.0.0.1"
    assert server["start"] <= client_span["start"] <= client_span["end"] <= server["end"]
    # the upstream got the gateway's CLIENT span as parent, in the header and in params._meta
    sent = [r for r in upstream.requests() if r.get("tool") == ALLOWED][-1]
    expected = f"00-{tid}-{client_span['span_id']}-01"
    assert sent["headers"]["traceparent"] == expected
    assert sent["meta_traceparents"] == [expected]
    assert any(r.get("service.name") == "gw-under-test" for r in receiver.resources)


def test_meta_context_wins_for_its_message(setup, receiver):
    gw, upstream = setup
    tid, other = trace_id(), trace_id()
    with httpx.Client(timeout=30) as client:
        headers = open_session(client, gw.url("/github-mcp"))
        upstream.reset()
        resp = client.post(gw.url("/github-mcp"), headers={**headers, "traceparent": traceparent(other)},
                           json=call(ALLOWED, traceparent=traceparent(tid, "1111111111111111"), progressToken="p"))
    assert resp.status_code == 200
    server, = receiver.wait_spans(lambda s: s["trace_id"] == tid and s["kind"] == Span.SPAN_KIND_SERVER)
    assert server["parent"] == "1111111111111111"
    client_span, = receiver.wait_spans(lambda s: s["trace_id"] == tid and s["kind"] == Span.SPAN_KIND_CLIENT)
    sent = [r for r in upstream.requests() if r.get("tool") == ALLOWED][-1]
    assert sent["meta_traceparents"] == [f"00-{tid}-{client_span['span_id']}-01"]


def test_denied_call_is_an_error_span_without_upstream_call(setup, receiver):
    gw, upstream = setup
    tid = trace_id()
    with httpx.Client(timeout=30) as client:
        headers = open_session(client, gw.url("/github-mcp"))
        upstream.reset()
        resp = client.post(gw.url("/github-mcp"), headers={**headers, "traceparent": traceparent(tid)},
                           json=call(DENIED))
    assert "error" in parse_mcp_body(resp)[0]
    server, = receiver.wait_spans(lambda s: s["trace_id"] == tid)
    time.sleep(0.5)
    assert [s["kind"] for s in receiver.spans if s["trace_id"] == tid] == [Span.SPAN_KIND_SERVER]  # never forwarded
    assert server["name"] == "tools/call"  # a denied name is the client's text: not in the span name
    a = server["attrs"]
    assert server["status"] == Status.STATUS_CODE_ERROR
    assert a["mcpgw.decision"] == "deny" and a["gen_ai.tool.name"] == DENIED
    assert a["error.type"] == a["rpc.response.status_code"] == "-32602"
    assert a["mcpgw.rule"]
    assert not [r for r in upstream.requests() if r.get("tool") == DENIED]


def test_refused_at_headers_is_a_span_too(setup, receiver):
    gw, _ = setup
    tid = trace_id()
    resp = httpx.post(gw.url("/github-mcp"), headers={**MCP_HEADERS, "apikey": "wrong", "traceparent": traceparent(tid)},
                      json=call(ALLOWED), timeout=30)
    assert resp.status_code == 401
    server, = receiver.wait_spans(lambda s: s["trace_id"] == tid)
    assert server["status"] == Status.STATUS_CODE_ERROR and server["attrs"]["error.type"] == "401"
    assert "wrong" not in str(server["attrs"])


def test_forged_trace_context_is_not_believed(setup, receiver):
    """A malformed traceparent starts a new trace; two traceparent headers are both ignored."""
    gw, upstream = setup
    with httpx.Client(timeout=30) as client:
        headers = open_session(client, gw.url("/github-mcp"))
        upstream.reset()
        bad = "00-" + "0" * 32 + "-00f067aa0ba902b7-01"  # all-zero trace id: invalid
        client.post(gw.url("/github-mcp"), headers={**headers, "traceparent": bad}, json=call(ALLOWED))
        two = [(k, v) for k, v in headers.items()] + [("traceparent", traceparent("a" * 32)),
                                                       ("traceparent", traceparent("b" * 32))]
        client.post(gw.url("/github-mcp"), headers=httpx.Headers(two), json=call(ALLOWED))
    sent = [r for r in upstream.requests() if r.get("tool") == ALLOWED]
    assert len(sent) == 2
    for r in sent:
        tp = r["headers"]["traceparent"]
        assert isinstance(tp, str) and "0" * 32 not in tp and "a" * 32 not in tp and "b" * 32 not in tp
        assert r["meta_traceparents"] == [tp]


def test_operation_duration_metrics_arrive(setup, receiver):
    gw, _ = setup
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not {"mcp.server.operation.duration",
                                               "mcp.client.operation.duration"} <= receiver.metrics.keys():
        time.sleep(0.1)
    server = receiver.metrics["mcp.server.operation.duration"][-1]
    assert server.unit == "s"
    points = server.histogram.data_points
    methods = {a.value.string_value for p in points for a in p.attributes if a.key == "mcp.method.name"}
    assert {"tools/call", "initialize"} <= methods
    assert any(a.key == "error.type" and a.value.string_value == "-32602" for p in points for a in p.attributes)
    assert "mcp.client.operation.duration" in receiver.metrics


def test_receiver_down_requests_unaffected_and_drops_counted(tmp_path):
    upstream = DemoUpstream(tmp_path)
    metrics_port = free_port()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    gw = Gateway(tmp_path, policy(upstream), intercept=False, env=FAST_EXPORT,
                 extra=["--set", f"mcp_otlp={dead}", "--set", f"mcp_metrics={metrics_port}"])
    try:
        with httpx.Client(timeout=30) as client:
            headers = open_session(client, gw.url("/github-mcp"))
            for _ in range(5):
                started = time.monotonic()
                resp = client.post(gw.url("/github-mcp"), headers=headers, json=call(ALLOWED))
                assert resp.status_code == 200 and "result" in parse_mcp_body(resp)[0]
                assert time.monotonic() - started < 2  # export never holds a request
        deadline = time.monotonic() + 20
        dropped = 0.0
        while time.monotonic() < deadline and dropped < 1:
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    if s.name == "mcp_gateway_telemetry_spans_total" and s.labels["outcome"] == "dropped":
                        dropped = s.value
            time.sleep(0.2)
        assert dropped >= 1
    finally:
        gw.stop()
        upstream.stop()


def test_bad_endpoint_refuses_to_start(tmp_path):
    upstream = DemoUpstream(tmp_path)
    try:
        gw = Gateway(tmp_path, policy(upstream), intercept=False, wait=False,
                     extra=["--set", "mcp_otlp=ftp://collector"])
        assert gw.process.proc.wait(timeout=30) != 0
        assert "mcp_otlp" in gw.log()
    finally:
        upstream.stop()


def test_route_opentelemetry_from_the_policy(tmp_path, receiver):
    """routes.<name>.telemetry.opentelemetry (what a decK opentelemetry plugin becomes), no mcp_otlp."""
    upstream = DemoUpstream(tmp_path)
    native = policy(upstream)
    native["routes"]["github-mcp"]["telemetry"] = {"opentelemetry": {"endpoint": receiver.url,
                                                                     "service_name": "from-policy"}}
    gw = Gateway(tmp_path, native, intercept=False, env=FAST_EXPORT)
    tid = trace_id()
    try:
        with httpx.Client(timeout=30) as client:
            headers = open_session(client, gw.url("/github-mcp"))
            client.post(gw.url("/github-mcp"), headers={**headers, "traceparent": traceparent(tid)}, json=call(ALLOWED))
        receiver.wait_spans(lambda s: s["trace_id"] == tid, count=2)
        assert any(r.get("service.name") == "from-policy" for r in receiver.resources)
        sent = [r for r in upstream.requests() if r.get("tool") == ALLOWED][-1]
        assert tid in sent["headers"]["traceparent"]
    finally:
        gw.stop()
        upstream.stop()


def test_unsampled_traces_still_propagate(tmp_path, receiver):
    """Sampling 0: nothing recorded for a new trace, but the upstream still gets a context (not
    sampled) in both places; a client's sampled flag is followed (parent-based)."""
    upstream = DemoUpstream(tmp_path)
    gw = Gateway(tmp_path, policy(upstream), intercept=False, env=FAST_EXPORT,
                 extra=["--set", f"mcp_otlp={receiver.url}", "--set", "mcp_otlp_sampling=0"])
    unsampled, sampled = trace_id(), trace_id()
    try:
        with httpx.Client(timeout=30) as client:
            headers = open_session(client, gw.url("/github-mcp"))
            upstream.reset()
            client.post(gw.url("/github-mcp"), headers={**headers, "traceparent": f"00-{unsampled}-00f067aa0ba902b7-00"},
                        json=call(ALLOWED))
            client.post(gw.url("/github-mcp"), headers={**headers, "traceparent": traceparent(sampled)},
                        json=call(ALLOWED))
        receiver.wait_spans(lambda s: s["trace_id"] == sampled, count=2)
        time.sleep(0.5)
        assert not [s for s in receiver.spans if s["trace_id"] == unsampled]
        first, second = [r for r in upstream.requests() if r.get("tool") == ALLOWED]
        assert first["headers"]["traceparent"].startswith(f"00-{unsampled}-") and first["headers"]["traceparent"].endswith("-00")
        assert first["meta_traceparents"] == [first["headers"]["traceparent"]]
        assert second["headers"]["traceparent"].endswith("-01")
    finally:
        gw.stop()
        upstream.stop()


def test_intercept_mode_spans_and_propagation(tmp_path, receiver):
    """An agent calling the MCP server's own URL through the proxy listener (HTTP_PROXY)."""
    upstream = DemoUpstream(tmp_path)
    gw = Gateway(tmp_path, policy(upstream), env=FAST_EXPORT, extra=["--set", f"mcp_otlp={receiver.url}"])
    tid = trace_id()
    try:
        with httpx.Client(timeout=30, proxy=gw.proxy_url) as client:
            headers = open_session(client, upstream.url)
            upstream.reset()
            resp = client.post(upstream.url, headers={**headers, "traceparent": traceparent(tid)}, json=call(ALLOWED))
        assert resp.status_code == 200
        spans = receiver.wait_spans(lambda s: s["trace_id"] == tid, count=2)
        server = next(s for s in spans if s["kind"] == Span.SPAN_KIND_SERVER)
        client_span = next(s for s in spans if s["kind"] == Span.SPAN_KIND_CLIENT)
        assert server["attrs"]["mcpgw.mode"] == "intercept" and server["attrs"]["mcpgw.consumer"] == "dev-user"
        sent = [r for r in upstream.requests() if r.get("tool") == ALLOWED][-1]
        assert sent["headers"]["traceparent"] == f"00-{tid}-{client_span['span_id']}-01" == sent["meta_traceparents"][0]
    finally:
        gw.stop()
        upstream.stop()
