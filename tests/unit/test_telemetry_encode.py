"""The direct OTLP encoder (telemetry/otlp_encode.py) against the OpenTelemetry exporter's own:
both encodings of the same SDK spans, decoded with the official opentelemetry-proto messages,
must be the same message."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from mcpgw.telemetry.otlp_encode import Encoder

ATTRS = {"mcp.method.name": "tools/call", "jsonrpc.request.id": "7", "server.port": 8443, "mcpgw.shadow": False,
         "mcpgw.consumer.groups": ["developer", "ops"], "negative": -5, "ratio": 0.25, "big": 2 ** 40,
         "unicode": "sch\u00f6n \u2603 \U0001f600", "long": "x" * 300, "empty": "", "no.groups": []}


def spans(resource_attrs=None):
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource_attrs or {"service.name": "gw", "k": 3}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("mcpgw", "1.2", schema_url="https://opentelemetry.io/schemas/1.30.0",
                                 attributes={"mcpgw.semconv": "v0.1.0"})
    remote = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=True,
                         trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "v1"), ("b", "2")]))
    server = tracer.start_span("tools/call search", context=trace.set_span_in_context(NonRecordingSpan(remote)),
                               kind=SpanKind.SERVER, start_time=1_700_000_000_000_000_000)
    client = tracer.start_span("tools/call search", context=trace.set_span_in_context(server),
                               kind=SpanKind.CLIENT, start_time=1_700_000_000_000_100_000)
    client.set_attributes(ATTRS)
    client.set_status(Status(StatusCode.ERROR, "upstream said 502"))
    client.end(end_time=1_700_000_000_900_000_000)
    server.set_status(Status(StatusCode.ERROR))
    server.end(end_time=1_700_000_001_000_000_000)
    root = tracer.start_span("GET", kind=SpanKind.INTERNAL)  # no parent, no attributes, status unset
    root.end()
    other = provider.get_tracer("other")  # a second scope in the same batch
    with other.start_as_current_span("x", kind=SpanKind.PRODUCER):
        pass
    return exporter.get_finished_spans()


def test_same_message_as_the_exporters_encoder():
    batch = spans()
    ours = ExportTraceServiceRequest.FromString(Encoder().encode(batch))
    theirs = ExportTraceServiceRequest.FromString(encode_spans(batch).SerializePartialToString())
    assert ours == theirs
    decoded = ours.resource_spans[0].scope_spans[0].spans
    assert decoded[0].trace_state == "vendor=v1,b=2" and decoded[0].flags == 0x100
    assert decoded[1].flags == 0x300  # the SERVER span's parent is remote
    assert {a.key: a.value for a in decoded[0].attributes}["negative"].int_value == -5


def test_encoder_is_stable_across_batches_and_resources():
    encoder = Encoder()
    first, second = spans(), spans({"service.name": "other"})
    for batch in (first, second, first + second):
        ours = ExportTraceServiceRequest.FromString(encoder.encode(batch))
        assert ours == ExportTraceServiceRequest.FromString(encode_spans(batch).SerializePartialToString())
    assert len(ExportTraceServiceRequest.FromString(encoder.encode(first + second)).resource_spans) == 2


def test_events_and_links_are_left_to_the_exporter():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("s") as s:
        s.add_event("e")
    assert not Encoder().supports(exporter.get_finished_spans())
    assert Encoder().supports(spans())
