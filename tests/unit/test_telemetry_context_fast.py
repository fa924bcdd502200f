"""The trace context read and the sampling decided without the SDK's objects around them
(telemetry/propagation.parse, spans.Tracer.start_server) decide exactly as the SDK's W3C
propagator and ParentBased(TraceIdRatioBased) sampler do, on what a hostile client may send."""

from __future__ import annotations

import random

import pytest
from mitmproxy.test import tutils
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mcpgw.telemetry import propagation
from mcpgw.telemetry.spans import Tracer

TID, SID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
PARENTS = [
    f"00-{TID}-{SID}-01", f"00-{TID}-{SID}-00", f"00-{TID}-{SID}-03", f"00-{TID}-{SID}-ff",
    f" \t00-{TID}-{SID}-01 \t", f"00-{TID}-{SID}-01-extra", f"01-{TID}-{SID}-01-future", f"ff-{TID}-{SID}-01",
    f"00-{'0' * 32}-{SID}-01", f"00-{TID}-{'0' * 16}-01", f"00-{TID.upper()}-{SID}-01", f"0-{TID}-{SID}-01",
    f"00-{TID}-{SID}-1", f"00-{TID}x-{SID}-01", f"00-{TID}-{SID}-01\n", "", "garbage", "00-" + "a" * 600,
    f"00-{TID}-{SID}-01" + " " * 600, f"00_{TID}_{SID}_01", f"00-{TID}-{SID}-01,00-{'a' * 32}-{SID}-01",
]
STATES = [None, "", "rojo=00f067aa0ba902b7", "rojo=1,congo=2", "rojo=1,rojo=2", "bad key=1", "a=" + "b" * 600,
          ",,a=1,,", "a=1," * 40, "A=1", "k@v=1", "\u00e9=1"]


def w3c(traceparent: str, tracestate: str | None) -> SpanContext | None:
    carrier = {"traceparent": traceparent} if tracestate is None else {"traceparent": traceparent,
                                                                       "tracestate": tracestate}
    sc = trace.get_current_span(TraceContextTextMapPropagator().extract(carrier)).get_span_context()
    return sc if sc.is_valid else None


def same(a: SpanContext | None, b: SpanContext | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.trace_id, a.span_id, a.is_remote, int(a.trace_flags), a.trace_state.to_header()) == \
        (b.trace_id, b.span_id, b.is_remote, int(b.trace_flags), b.trace_state.to_header())


@pytest.mark.parametrize("traceparent", PARENTS)
@pytest.mark.parametrize("tracestate", STATES)
def test_parse_is_the_w3c_propagator(traceparent, tracestate):
    assert same(propagation.parse(traceparent, None if tracestate is None else [tracestate]), w3c(traceparent, tracestate))
    meta = {"params": {"_meta": {"traceparent": traceparent, **({} if tracestate is None else {"tracestate": tracestate})}}}
    assert same(propagation.parent_from_meta(meta), w3c(traceparent, tracestate))


@pytest.mark.parametrize("traceparent", PARENTS[:8])
def test_headers_are_read_as_the_propagator_reads_them(traceparent):
    req = tutils.treq(method=b"POST", content=b"{}")
    req.headers["Traceparent"] = traceparent
    req.headers.add("tracestate", "rojo=1")
    req.headers.add("TraceState", "congo=2")  # repeated fields are one list (RFC 9110)
    assert same(propagation.parent_from_headers(req.headers), w3c(traceparent, "rojo=1,congo=2"))
    req.headers.add("traceparent", traceparent)  # two parents: neither
    assert propagation.parent_from_headers(req.headers) is None


def test_meta_values_that_are_not_strings_are_no_context():
    for meta in ({"traceparent": 5}, {"traceparent": [f"00-{TID}-{SID}-01"]}, "x", None):
        assert propagation.parent_from_meta({"params": {"_meta": meta}}) is None
    sc = propagation.parent_from_meta({"params": {"_meta": {"traceparent": f"00-{TID}-{SID}-01", "tracestate": 7}}})
    assert sc is not None and not sc.trace_state


@pytest.mark.parametrize("ratio", [0.0, 0.001, 0.25, 0.5, 1.0])
def test_sampling_is_parent_based_trace_id_ratio(ratio):
    provider = TracerProvider()
    tracer = Tracer(provider, ratio, processor=None, scope=InstrumentationScope("t"))
    sdk = ParentBased(TraceIdRatioBased(ratio))
    rng = random.Random(ratio)
    kept = 0
    for _ in range(2000):
        span = tracer.start_server("x", None, 1)
        expected = sdk.should_sample(None, span.context.trace_id, "x", SpanKind.SERVER).decision
        assert span.sampled is (expected is Decision.RECORD_AND_SAMPLE)
        assert span.parent is None and not span.context.trace_state
        kept += span.sampled
    if 0 < ratio < 1:
        assert 0.5 * ratio * 2000 - 20 < kept < 1.5 * ratio * 2000 + 20
    for flags in (0, 1):
        parent = SpanContext(rng.getrandbits(128) or 1, rng.getrandbits(64) or 1, is_remote=True,
                             trace_flags=TraceFlags(flags), trace_state=propagation.parse(
                                 f"00-{TID}-{SID}-01", ["rojo=1"]).trace_state)
        span = tracer.start_server("x", parent, 1)
        context = trace.set_span_in_context(NonRecordingSpan(parent))
        result = sdk.should_sample(context, parent.trace_id, "x", SpanKind.SERVER)
        assert span.sampled is (result.decision is Decision.RECORD_AND_SAMPLE)
        assert span.context.trace_id == parent.trace_id and span.parent is parent
        assert span.context.trace_state.to_header() == (result.trace_state.to_header() if result.trace_state else "")
