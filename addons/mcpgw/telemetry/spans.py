"""Spans as plain data: begun in `request` (ids, the sampling decision, the context sent upstream),
ended once from the audit record with every attribute at once, and handed to the SDK's batch
processor as the SDK's own `ReadableSpan`.

Why not `Tracer.start_span` / `set_attributes` / `end`: the gateway knows a span's name and
attributes only when the response has ended, and the SDK's live span pays for what the gateway
never uses (a lock per call, each attribute validated and copied into a bounded mapping, span
processors' on_start). The attributes built here are already clean (str, int, bool, lists of
str; client-chosen strings cut at 256 characters: conventions.py). What stays the SDK's: the id
generator, the sampling rule (ParentBased(TraceIdRatioBased), applied in `start_server`), the
resource, the batch processor and its bounded queue, the OTLP exporter. A child follows its local
parent's sampled flag, as ParentBased does."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

_SAMPLED, _UNSAMPLED = TraceFlags(TraceFlags.SAMPLED), TraceFlags(TraceFlags.DEFAULT)
_EMPTY = TraceState()
UNSET = Status(StatusCode.UNSET)


class Started:
    """A span begun: its context, its parent's, its start time (ns)."""

    __slots__ = ("context", "parent", "start")

    def __init__(self, context: SpanContext, parent: SpanContext | None, start: int):
        self.context, self.parent, self.start = context, parent, start

    @property
    def sampled(self) -> bool:
        return self.context.trace_flags.sampled

    def carrier(self) -> dict[str, str]:
        """W3C trace context naming this span as the parent (what TraceContextTextMapPropagator writes)."""
        c = self.context
        out = {"traceparent": f"00-{c.trace_id:032x}-{c.span_id:016x}-{int(c.trace_flags):02x}"}
        if c.trace_state:
            out["tracestate"] = c.trace_state.to_header()
        return out


class Tracer:
    def __init__(self, provider: TracerProvider, ratio: float, processor: SpanProcessor,
                 scope: InstrumentationScope):
        self.ids = provider.id_generator
        self.resource = provider.resource
        self.processor, self.scope = processor, scope
        # ParentBased(TraceIdRatioBased(ratio)), the provider's sampler, decided here without its
        # Context lookups: a parent's sampled flag is followed (remote or local), a new trace is
        # kept when the low 64 bits of its id fall under the ratio's bound (TraceIdRatioBased's rule)
        self.bound = TraceIdRatioBased.get_bound_for_rate(ratio)

    def start_server(self, name: str, parent: SpanContext | None, start: int) -> Started:
        """A SERVER span, child of the client's context (None: a new trace)."""
        if parent is not None and parent.is_valid:
            trace_id, flags, state = parent.trace_id, parent.trace_flags, parent.trace_state
            context = SpanContext(trace_id, self.ids.generate_span_id(), is_remote=False,
                                  trace_flags=_SAMPLED if flags.sampled else _UNSAMPLED, trace_state=state)
            return Started(context, parent, start)
        trace_id = self.ids.generate_trace_id()
        sampled = trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < self.bound
        context = SpanContext(trace_id, self.ids.generate_span_id(), is_remote=False,
                              trace_flags=_SAMPLED if sampled else _UNSAMPLED, trace_state=_EMPTY)
        return Started(context, None, start)

    def start_child(self, parent: Started, start: int) -> Started:
        p = parent.context
        context = SpanContext(p.trace_id, self.ids.generate_span_id(), is_remote=False,
                              trace_flags=p.trace_flags, trace_state=p.trace_state)
        return Started(context, p, start)

    def end(self, span: Started, name: str, kind: SpanKind, attributes: dict[str, Any], status: Status,
            end: int) -> None:
        if not span.sampled:
            return
        self.processor.on_end(ReadableSpan(
            name=name, context=span.context, parent=span.parent, resource=self.resource, attributes=attributes,
            kind=kind, status=status, start_time=span.start, end_time=max(end, span.start),
            instrumentation_scope=self.scope))
