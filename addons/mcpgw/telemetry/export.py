"""The OpenTelemetry SDK pipeline: providers, OTLP/HTTP exporters, and the counts of what was
exported and what was lost. Export runs in the SDK's own threads (batching, a bounded queue), so a
slow or absent receiver never holds a request: spans beyond the queue are dropped and counted."""

from __future__ import annotations

import logging
from typing import Any, Sequence

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from .conventions import DURATION_BUCKETS, SEMCONV
from .histograms import Meter
from .otlp_encode import Encoder
from .settings import TelemetrySettings
from .spans import Tracer

log = logging.getLogger("mcpgw.telemetry")


class Counts:
    def __init__(self) -> None:
        self.exported = 0
        self.dropped = 0  # queue full, or the receiver refused / could not be reached
        self.failed_exports = 0


class _CountingExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, counts: Counts):
        self.inner, self.counts = inner, counts

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:  # the SDK thread must go on; the loss is counted
            log.exception("OTLP span export failed")
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.counts.exported += len(spans)
        else:
            self.counts.dropped += len(spans)
            self.counts.failed_exports += 1
            if self.counts.failed_exports in (1, 10, 100) or self.counts.failed_exports % 1000 == 0:
                log.warning("OTLP span export failed %d time(s); %d span(s) dropped so far",
                            self.counts.failed_exports, self.counts.dropped)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class DirectOTLPSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP span exporter (its transport, retries, TLS, headers, OTEL_* settings) with
    the spans encoded by otlp_encode: about a quarter of the exporter's own encoding work, done in
    the export thread, which shares the GIL with the event loop."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._encoder = Encoder()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        client = getattr(self, "_client", None)  # (the exporter's HTTP client: its private name in 1.45)
        if self._shutdown or client is None or not self._encoder.supports(spans):
            return super().export(spans)
        data = self._encoder.encode(spans)
        if 0 < self._max_request_size < len(data):
            log.warning("dropping a span batch of %d bytes (OTLP max_request_size)", len(data))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if client.export(data).success else SpanExportResult.FAILURE


def _exporters(settings: TelemetrySettings) -> tuple[SpanExporter, Any]:
    if settings.protocol != "grpc":
        return (DirectOTLPSpanExporter(endpoint=settings.signal_url("traces")),
                OTLPMetricExporter(endpoint=settings.signal_url("metrics")))
    # (imported only here: grpcio is the otlp-grpc extra's)
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    encoder = Encoder()

    class DirectGrpcSpanExporter(GrpcSpanExporter):
        """The SDK's OTLP/gRPC exporter with the spans encoded by otlp_encode: the request message is
        parsed from those bytes in protobuf's C code instead of built field by field in Python."""

        def _translate_data(self, data):
            if not encoder.supports(data):
                return super()._translate_data(data)
            return ExportTraceServiceRequest.FromString(encoder.encode(data))

    insecure = settings.endpoint.startswith("http://")
    return (DirectGrpcSpanExporter(endpoint=settings.endpoint, insecure=insecure),
            GrpcMetricExporter(endpoint=settings.endpoint, insecure=insecure))


class _DropCountingProcessor(SpanProcessor):
    """The batch processor, counting the spans its full queue refuses (the SDK only logs them)."""

    def __init__(self, inner: BatchSpanProcessor, counts: Counts):
        self.inner, self.counts = inner, counts
        batch = getattr(inner, "_batch_processor", None)
        self._queue = getattr(batch, "_queue", None)
        self._max = getattr(batch, "_max_queue_size", None)

    def on_start(self, span, parent_context=None) -> None:
        self.inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if not span.context.trace_flags.sampled:
            return
        if self._queue is not None and self._max is not None and len(self._queue) >= self._max:
            self.counts.dropped += 1
        self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class Pipeline:
    """One configured export: a tracer, the two MCP duration histograms, and their shutdown."""

    def __init__(self, settings: TelemetrySettings):
        # The SDK logs every retry and every span a full queue refuses; the counts (and this
        # module's own warnings, at the 1st, 10th, 100th... failure) say it without flooding the log.
        for name in ("opentelemetry.sdk", "opentelemetry.exporter"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self.settings = settings
        self.counts = Counts()
        resource = Resource.create({"service.name": settings.service_name, **settings.resource_attributes})
        sampler = ParentBased(TraceIdRatioBased(settings.sampling))
        self.tracer_provider = TracerProvider(resource=resource, sampler=sampler)
        span_exporter, metric_exporter = _exporters(settings)
        exporter = _CountingExporter(span_exporter, self.counts)
        processor = _DropCountingProcessor(BatchSpanProcessor(exporter), self.counts)
        self.tracer_provider.add_span_processor(processor)  # (so that its shutdown flushes the queue)
        self.tracer = Tracer(self.tracer_provider, settings.sampling, processor,
                             InstrumentationScope("mcpgw", None, None, {"mcpgw.semconv": SEMCONV}))
        self.meter = Meter(metric_exporter, resource, InstrumentationScope("mcpgw"))
        self.server_duration = self.meter.histogram(
            "mcp.server.operation.duration", "s", "MCP request or notification duration as observed on the receiver "
            "from the time it was received until the result or ack is sent.", DURATION_BUCKETS)
        self.client_duration = self.meter.histogram(
            "mcp.client.operation.duration", "s", "The duration of the MCP request or notification as observed on "
            "the sender from the time it was sent until the response or ack is received.", DURATION_BUCKETS)
        self.server_session_duration = self.meter.histogram(
            "mcp.server.session.duration", "s", "The duration of the MCP session as observed on the MCP server.",
            DURATION_BUCKETS)
        self.client_session_duration = self.meter.histogram(
            "mcp.client.session.duration", "s", "The duration of the MCP session as observed on the MCP client.",
            DURATION_BUCKETS)

    def shutdown(self) -> None:
        for provider in (self.tracer_provider, self.meter):
            try:
                provider.shutdown()
            except Exception:  # at exit: nothing left to protect but the rest of the shutdown
                log.exception("telemetry shutdown failed")
