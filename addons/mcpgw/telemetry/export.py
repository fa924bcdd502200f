"""The OpenTelemetry SDK pipeline: providers, OTLP/HTTP exporters, and the counts of what was
exported and what was lost. Export runs in the SDK's own threads (batching, a bounded queue), so a
slow or absent receiver never holds a request: spans beyond the queue are dropped and counted."""

from __future__ import annotations

import logging
from typing import Sequence

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from .conventions import DURATION_BUCKETS, SEMCONV
from .settings import TelemetrySettings

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
        self.tracer_provider = TracerProvider(resource=resource,
                                              sampler=ParentBased(TraceIdRatioBased(settings.sampling)))
        exporter = _CountingExporter(OTLPSpanExporter(endpoint=settings.signal_url("traces")), self.counts)
        self.tracer_provider.add_span_processor(_DropCountingProcessor(BatchSpanProcessor(exporter), self.counts))
        self.tracer = self.tracer_provider.get_tracer("mcpgw", schema_url=None, attributes={"mcpgw.semconv": SEMCONV})
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=settings.signal_url("metrics")))
        self.meter_provider = MeterProvider(metric_readers=[reader], resource=resource)
        meter = self.meter_provider.get_meter("mcpgw")
        self.server_duration = meter.create_histogram(
            "mcp.server.operation.duration", unit="s", explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
            description="MCP request or notification duration as observed on the receiver from the time it was "
                        "received until the result or ack is sent.")
        self.client_duration = meter.create_histogram(
            "mcp.client.operation.duration", unit="s", explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
            description="The duration of the MCP request or notification as observed on the sender from the time "
                        "it was sent until the response or ack is received.")

    def shutdown(self) -> None:
        for provider in (self.tracer_provider, self.meter_provider):
            try:
                provider.shutdown()
            except Exception:  # at exit: nothing left to protect but the rest of the shutdown
                log.exception("telemetry shutdown failed")
