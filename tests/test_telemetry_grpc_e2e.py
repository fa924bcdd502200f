"""OpenTelemetry over OTLP/gRPC end to end: a real mitmdump with `--set mcp_otlp_protocol=grpc`
exporting to a real gRPC receiver in this test (grpcio serving the official opentelemetry-proto
TraceService and MetricsService), the demo upstream behind it."""

from __future__ import annotations

import time
from concurrent import futures

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.gateway import DemoUpstream, Gateway
from tests.support.procs import free_port
from tests.test_telemetry_e2e import ALLOWED, FAST_EXPORT, call, open_session, policy, trace_id, traceparent

pytestmark = pytest.mark.e2e


class GrpcReceiver(trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.metrics: set[str] = set()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self.server)
        self.port = free_port()
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    def Export(self, request, context):  # both services name their method Export
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            self.spans += [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
            return trace_service_pb2.ExportTraceServiceResponse()
        self.metrics |= {m.name for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def wait(self, predicate, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"spans {[s.name for s in self.spans]}, metrics {sorted(self.metrics)}")


def test_spans_and_metrics_over_grpc(tmp_path):
    receiver = GrpcReceiver()
    upstream = DemoUpstream(tmp_path)
    gw = Gateway(tmp_path, policy(upstream), intercept=False, env=FAST_EXPORT,
                 extra=["--set", f"mcp_otlp=http://127.0.0.1:{receiver.port}", "--set", "mcp_otlp_protocol=grpc"])
    try:
        tid = trace_id()
        with httpx.Client(timeout=30) as client:
            headers = open_session(client, gw.url("/github-mcp"))
            resp = client.post(gw.url("/github-mcp"), headers={**headers, "traceparent": traceparent(tid)},
                               json=call(ALLOWED))
        assert resp.status_code == 200
        mine = lambda: [s for s in receiver.spans if s.trace_id.hex() == tid]  # noqa: E731
        receiver.wait(lambda: len(mine()) >= 2)
        server = next(s for s in mine() if s.kind == Span.SPAN_KIND_SERVER)
        client_span = next(s for s in mine() if s.kind == Span.SPAN_KIND_CLIENT)
        assert server.name == client_span.name == f"tools/call {ALLOWED}"
        assert server.parent_span_id.hex() == "00f067aa0ba902b7" and client_span.parent_span_id == server.span_id
        attrs = {a.key: a.value.string_value for a in server.attributes}
        assert attrs["mcp.method.name"] == "tools/call" and attrs["mcpgw.consumer"] == "dev-user"
        sent = [r for r in upstream.requests() if r.get("tool") == ALLOWED][-1]
        assert sent["headers"]["traceparent"] == f"00-{tid}-{client_span.span_id.hex()}-01"
        receiver.wait(lambda: "mcp.server.operation.duration" in receiver.metrics)
    finally:
        gw.stop()
        upstream.stop()
        receiver.server.stop(0)


def test_an_unknown_protocol_refuses_to_start(tmp_path):
    upstream = DemoUpstream(tmp_path)
    try:
        gw = Gateway(tmp_path, policy(upstream), intercept=False, wait=False,
                     extra=["--set", "mcp_otlp=http://127.0.0.1:4317", "--set", "mcp_otlp_protocol=carrier-pigeon"])
        assert gw.process.proc.wait(timeout=60) != 0
        assert "mcp_otlp" in gw.log() and "grpc" in gw.log()
    finally:
        upstream.stop()
