"""The MCP duration histograms (mcp.server/client.operation.duration, mcp.*.session.duration),
aggregated here and exported through the SDK's periodic metric reader and OTLP exporter.

Why not the SDK's `Histogram.record`: each call builds a `Measurement`, validates and copies every
attribute, hashes the attribute set recursively, asks the exemplar filter and walks the reader
storages: about 15 us per record on this machine, two records per governed message, on the event
loop. Here a record is one frozenset of the (already clean: str values) attributes, a dict lookup
and a bisect under a lock: about 1.5 us. What stays the SDK's: the reader (its thread, interval
and timeout, OTEL_METRIC_EXPORT_INTERVAL/TIMEOUT), the exporter (OTLP/HTTP or gRPC, its
temporality preference, OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE) and the data classes
it encodes. The aggregation is the SDK's explicit-bucket histogram: bucket i counts values in
(bounds[i-1], bounds[i]], with count, sum, min and max per attribute set."""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics._internal.instrument import _Histogram  # (the reader's key for histograms)
from opentelemetry.sdk.metrics.export import (AggregationTemporality, Histogram as HistogramData,
                                              HistogramDataPoint, Metric, MetricExporter, MetricsData,
                                              PeriodicExportingMetricReader, ResourceMetrics, ScopeMetrics)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

MAX_SERIES = 2000  # attribute sets per histogram; beyond, a record is dropped (the SDK's cardinality limit)


class _Series:
    __slots__ = ("attributes", "counts", "count", "sum", "min", "max", "start")

    def __init__(self, attributes: dict[str, Any], buckets: int, start: int):
        self.attributes = attributes
        self.counts = [0] * buckets
        self.count, self.sum, self.min, self.max, self.start = 0, 0.0, float("inf"), float("-inf"), start


class Histogram:
    """One histogram instrument: `record(value, attributes)` from the event loop, `collect` from
    the reader's thread."""

    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float]):
        self.name, self.unit, self.description = name, unit, description
        self.bounds = tuple(float(b) for b in bounds)
        self._series: dict[frozenset, _Series] = {}
        self._lock = threading.Lock()
        self._since = time.time_ns()  # start of the current delta interval
        self.dropped = 0

    def record(self, value: float, attributes: dict[str, Any], key: frozenset | None = None) -> None:
        """`key`: frozenset(attributes.items()), when the caller keeps it."""
        if key is None:
            key = frozenset(attributes.items())
        index = bisect_left(self.bounds, value)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                if len(self._series) >= MAX_SERIES:
                    self.dropped += 1
                    return
                series = self._series[key] = _Series(dict(attributes), len(self.bounds) + 1, time.time_ns())
            series.counts[index] += 1
            series.count += 1
            series.sum += value
            if value < series.min:
                series.min = value
            if value > series.max:
                series.max = value

    def collect(self, now: int, delta: bool) -> Metric | None:
        """The data points since the start (cumulative) or since the last collection (delta)."""
        with self._lock:
            since, self._since = self._since, now
            points = [HistogramDataPoint(
                attributes=s.attributes, start_time_unix_nano=since if delta else s.start, time_unix_nano=now, count=s.count, sum=s.sum,
                bucket_counts=list(s.counts), explicit_bounds=self.bounds, min=s.min, max=s.max)
                for s in self._series.values()]
            if delta:  # the next interval starts now; a series with nothing new is not sent again
                self._series = {}
        if not points:
            return None
        temporality = AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
        return Metric(name=self.name, description=self.description, unit=self.unit,
                      data=HistogramData(data_points=points, aggregation_temporality=temporality))


class Meter:
    """The histograms of one pipeline and the SDK reader that exports them periodically."""

    def __init__(self, exporter: MetricExporter, resource: Resource, scope: InstrumentationScope):
        self.resource, self.scope = resource, scope
        self.histograms: list[Histogram] = []
        self.reader = PeriodicExportingMetricReader(exporter)
        # the reader asks this for its data instead of a MeterProvider's storage (what a
        # MeterProvider registers with the same call)
        self.reader._set_collect_callback(self._collect)
        # the exporter's preference (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE), as the reader mapped it
        self._delta = self.reader._instrument_class_temporality.get(_Histogram) is AggregationTemporality.DELTA

    def histogram(self, name: str, unit: str, description: str, bounds: Sequence[float]) -> Histogram:
        h = Histogram(name, unit, description, bounds)
        self.histograms.append(h)
        return h

    def _collect(self, reader: Any, timeout_millis: float = 10_000) -> MetricsData | None:
        now = time.time_ns()
        metrics = [m for h in self.histograms if (m := h.collect(now, self._delta)) is not None]
        if not metrics:
            return None
        return MetricsData(resource_metrics=[ResourceMetrics(
            resource=self.resource, schema_url=self.resource.schema_url,
            scope_metrics=[ScopeMetrics(scope=self.scope, metrics=metrics, schema_url=self.scope.schema_url or "")])])

    def shutdown(self) -> None:
        self.reader.shutdown()  # (its thread collects and exports a last time)
