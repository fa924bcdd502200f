"""The gateway's own histogram aggregation (telemetry/histograms.py) against the SDK's: the same
values recorded in both give the same data points (buckets, count, sum, min, max, attributes),
and what the SDK's reader hands the exporter is the SDK's own data classes."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (AggregationTemporality, InMemoryMetricReader, MetricExporter,
                                              MetricExportResult)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from mcpgw.telemetry import histograms
from mcpgw.telemetry.conventions import DURATION_BUCKETS

VALUES = [0.0, 0.004, 0.01, 0.0100001, 0.2, 0.2, 7.5, 300, 301, 1e6]  # on, below and above the bounds
A = {"mcp.method.name": "tools/call", "mcpgw.route": "r", "mcpgw.decision": "allow"}
B = {"mcp.method.name": "tools/list", "mcpgw.route": "r", "mcpgw.decision": "deny", "error.type": "-32602"}


class Capture(MetricExporter):
    def __init__(self, temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE):
        super().__init__(preferred_temporality={Histogram: temporality})
        self.exports = []

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        self.exports.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        pass


def sdk_points(records):
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    h = provider.get_meter("t").create_histogram("d", unit="s", explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS))
    for value, attrs in records:
        h.record(value, attrs)
    data = reader.get_metrics_data()
    provider.shutdown()
    return data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points


def key(point):
    return (point.count, point.sum, list(point.bucket_counts), list(point.explicit_bounds), point.min, point.max,
            dict(point.attributes))


@pytest.fixture
def meter(monkeypatch):
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")  # collected by the test only
    made = []

    def make(temporality=AggregationTemporality.CUMULATIVE):
        exporter = Capture(temporality)
        m = histograms.Meter(exporter, Resource.create({"service.name": "gw"}), InstrumentationScope("mcpgw"))
        made.append(m)
        return m, exporter

    yield make
    for m in made:
        m.shutdown()


def test_same_points_as_the_sdk(meter):
    m, exporter = meter()
    h = m.histogram("mcp.server.operation.duration", "s", "desc", DURATION_BUCKETS)
    records = [(v, A) for v in VALUES] + [(v, B) for v in VALUES[:4]]
    for value, attrs in records:
        h.record(value, dict(attrs))  # (a new dict each time, with the same items: one series)
    m.reader.collect()
    [data] = exporter.exports
    [rm] = data.resource_metrics
    assert rm.resource.attributes["service.name"] == "gw"
    [sm] = rm.scope_metrics
    assert sm.scope.name == "mcpgw"
    [metric] = sm.metrics
    assert (metric.name, metric.unit, metric.description) == ("mcp.server.operation.duration", "s", "desc")
    assert metric.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    ours = sorted(key(p) for p in metric.data.data_points)
    assert ours == sorted(key(p) for p in sdk_points(records))
    assert len(ours) == 2


def test_attribute_order_is_one_series(meter):
    m, exporter = meter()
    h = m.histogram("x", "s", "", DURATION_BUCKETS)
    h.record(0.1, {"a": "1", "b": "2"})
    h.record(0.1, {"b": "2", "a": "1"})
    m.reader.collect()
    [point] = exporter.exports[0].resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    assert point.count == 2


def test_cumulative_keeps_counting_and_delta_restarts(meter):
    m, exporter = meter()
    h = m.histogram("x", "s", "", DURATION_BUCKETS)
    h.record(0.1, A)
    m.reader.collect()
    h.record(0.1, A)
    m.reader.collect()
    counts = [e.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points[0].count for e in exporter.exports]
    assert counts == [1, 2]

    m, exporter = meter(AggregationTemporality.DELTA)
    h = m.histogram("x", "s", "", DURATION_BUCKETS)
    h.record(0.1, A)
    m.reader.collect()
    m.reader.collect()  # nothing new: nothing exported
    h.record(0.1, A)
    h.record(0.3, A)
    m.reader.collect()
    points = [e.resource_metrics[0].scope_metrics[0].metrics[0].data for e in exporter.exports]
    assert [p.aggregation_temporality for p in points] == [AggregationTemporality.DELTA] * 2
    assert [p.data_points[0].count for p in points] == [1, 2]
    assert points[1].data_points[0].start_time_unix_nano >= points[0].data_points[0].time_unix_nano


def test_series_are_bounded(meter, monkeypatch):
    """Attribute values are bounded by the conventions module; should a bug let a client's
    strings through, the series stop growing instead of the gateway's memory."""
    monkeypatch.setattr(histograms, "MAX_SERIES", 3)
    m, exporter = meter()
    h = m.histogram("x", "s", "", DURATION_BUCKETS)
    for i in range(10):
        h.record(0.1, {"gen_ai.tool.name": f"t{i}"})
    h.record(0.1, {"gen_ai.tool.name": "t0"})  # a known series still counts
    m.reader.collect()
    points = exporter.exports[0].resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    assert sorted((p.attributes["gen_ai.tool.name"], p.count) for p in points) == [("t0", 2), ("t1", 1), ("t2", 1)]
    assert h.dropped == 7


def test_nothing_recorded_exports_nothing(meter):
    m, exporter = meter()
    m.histogram("x", "s", "", DURATION_BUCKETS)
    m.reader.collect()
    assert exporter.exports == []
