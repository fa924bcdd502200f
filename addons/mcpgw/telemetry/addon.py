"""The telemetry addon: per governed MCP message a SERVER span (the client's message as the gateway
received it) and, when the gateway forwards it, a CLIENT span (the upstream call), plus the MCP
operation-duration histograms, exported over OTLP/HTTP:

    --set mcp_otlp=http://collector:4318   --set mcp_otlp_sampling=0.25   --set mcp_otlp_service=NAME

The standard OTEL_* variables the SDK reads are honoured (OTEL_EXPORTER_OTLP_HEADERS for a
collector's credential, OTEL_EXPORTER_OTLP_TIMEOUT, OTEL_BSP_*, OTEL_METRIC_EXPORT_INTERVAL,
OTEL_RESOURCE_ATTRIBUTES). Off (empty mcp_otlp): no observer, every hook returns at once.

Spans are started in `request`, which mitmproxy runs after the gateway's own (this is a child
addon): every decision is made, the body is final, so the trace context can be written into it.
They are finished from the audit log's records, the same records the audit file and Prometheus
count, when the response has ended: a streamed (SSE) response is never held for them."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from mitmproxy import ctx, exceptions, http
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from .. import context
from ..audit import match_decisions
from ..headers import header
from . import answers, conventions as conv, llm_tools, plans, propagation, span_attributes
from ..ai import mcp_tools
from ..rest_tools import spans as rest_spans
from .kong_log import kong_record
from .routes import RouteSinks
from .sessions import SessionClock, attributes as session_attributes
from .settings import TelemetrySettings

if TYPE_CHECKING:
    from .export import Pipeline
    from .spans import Started
    from ..auditlog import AuditLog
    from ..policy.store import PolicyStore

log = logging.getLogger("mcpgw.telemetry")

MAX_TOOLS = 200  # tool names kept as a metric attribute; the rest are counted without one


class _Spans:
    __slots__ = ("pairs", "sent_ns")

    def __init__(self) -> None:
        self.pairs: list[tuple[Started, Started | None]] = []
        self.sent_ns = 0  # when the request went upstream


class Telemetry:
    def __init__(self, store: PolicyStore, audit_log: AuditLog):
        self.store = store
        self.audit_log = audit_log
        self.pipeline: Pipeline | None = None  # mcp_otlp: every route
        self.routes = RouteSinks()  # the policy's routes.<name>.telemetry
        store.listeners.append(self._policy_loaded)
        self._flows: weakref.WeakKeyDictionary[http.HTTPFlow, _Spans] = weakref.WeakKeyDictionary()
        self._tools: set[str] = set()
        self._sessions = SessionClock()
        self._startup_error: str | None = None
        answers.enabled = lambda route: self._pipeline(route) is not None  # the response phase reads answers
        llm_tools.enabled = lambda: self.pipeline is not None or bool(self.routes.pipelines)
        if llm_tools.seen not in mcp_tools.CALL_OBSERVERS:  # (a script reload makes a new addon, not a new module)
            mcp_tools.CALL_OBSERVERS.append(llm_tools.seen)

    # -- lifecycle -----------------------------------------------------------------------------

    def load(self, loader) -> None:
        loader.add_option("mcp_otlp", str, "", "OpenTelemetry: OTLP/HTTP (protobuf) endpoint for the gateway's MCP "
                                               "spans and metrics, e.g. http://127.0.0.1:4318. Empty: off.")
        loader.add_option("mcp_otlp_sampling", str, "1", "OpenTelemetry: share of new traces recorded (0 to 1); "
                                                         "a client's sampled flag is followed.")
        loader.add_option("mcp_otlp_service", str, "mcp-gateway", "OpenTelemetry: service.name of the gateway.")
        loader.add_option("mcp_otlp_protocol", str, "", "OpenTelemetry: http/protobuf or grpc (the otlp-grpc extra); "
                                                        "empty: OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf.")

    def configure(self, updated: set[str]) -> None:
        if not updated & {"mcp_otlp", "mcp_otlp_sampling", "mcp_otlp_service", "mcp_otlp_protocol"}:
            return
        try:
            settings = self._settings()
        except exceptions.OptionsError as e:
            self._startup_error = self._startup_error or str(e)
            raise
        self._startup_error = None
        if self.pipeline is not None and settings == self.pipeline.settings:
            return
        self._stop()
        if settings is not None:
            from .export import Pipeline  # the SDK and exporters load only when telemetry is on

            self.pipeline = Pipeline(settings)
            self._observe_while_needed()
            log.info("OpenTelemetry: exporting MCP spans and metrics to %s (%s, sampling %s, %s)",
                     settings.endpoint if settings.protocol == "grpc" else settings.signal_url("traces"),
                     settings.protocol, settings.sampling, conv.SEMCONV)

    @staticmethod
    def _settings() -> TelemetrySettings | None:
        endpoint = ctx.options.mcp_otlp.strip()
        if not endpoint:
            return None
        try:
            protocol = ctx.options.mcp_otlp_protocol.strip() or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
            return TelemetrySettings(endpoint=endpoint, sampling=float(ctx.options.mcp_otlp_sampling),
                                     service_name=ctx.options.mcp_otlp_service or "mcp-gateway",
                                     protocol=protocol or "http/protobuf")
        except (ValidationError, ValueError) as e:
            detail = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
            raise exceptions.OptionsError(f"mcp_otlp: {detail}") from None

    def running(self) -> None:
        if self._startup_error is not None:
            print(f"MCP gateway: {self._startup_error}", file=sys.stderr, flush=True)
            raise SystemExit(1)  # telemetry was asked for with a wrong setting: a configuration error

    def done(self) -> None:
        self._stop(wait=True)
        self.routes.close()

    def _stop(self, wait: bool = False) -> None:
        if self.pipeline is None:
            return
        pipeline, self.pipeline = self.pipeline, None
        self._observe_while_needed()
        if wait:
            pipeline.shutdown()
        else:  # an option change at run time: flushing to a slow collector must not hold the event loop
            threading.Thread(target=pipeline.shutdown, name="mcpgw-otlp-shutdown", daemon=True).start()

    def _policy_loaded(self, snap, err) -> None:
        if snap is None:
            return
        self.routes.update(snap.policy)
        self._observe_while_needed()
        if self.routes.prometheus and not ctx.options.mcp_metrics:
            log.warning("routes %s enable prometheus: serve the metrics with --set mcp_metrics=HOST:PORT",
                        ", ".join(sorted(self.routes.prometheus)))

    def _observe_while_needed(self) -> None:
        """The audit log builds records only for observers: be one only while something is exported."""
        needed = self.pipeline is not None or self.routes.active
        if needed and self.observe not in self.audit_log.observers:
            self.audit_log.observers.append(self.observe)
            self.audit_log.size_readers.append(self._reads_sizes)
        elif not needed and self.observe in self.audit_log.observers:
            self.audit_log.observers.remove(self.observe)
            self.audit_log.size_readers.remove(self._reads_sizes)

    def _reads_sizes(self) -> bool:
        return bool(self.routes.sinks)  # Kong's log records carry response.size; spans do not

    @property
    def counts(self):
        return self.pipeline.counts if self.pipeline is not None else None

    # -- spans ---------------------------------------------------------------------------------

    def _pipeline(self, route: str | None) -> Pipeline | None:
        return self.pipeline or self.routes.pipelines.get(route)

    def request(self, flow: http.HTTPFlow) -> None:
        fctx = context.get(flow)
        pipeline = self._pipeline(fctx.route_name) if fctx is not None else None
        if pipeline is None:
            return
        try:
            self._start(pipeline, fctx, flow)
        except Exception:  # telemetry never decides a request's fate; the spans are lost, and said so
            log.exception("could not start the spans of %s %s", flow.request.method, flow.request.pretty_url)

    def _start(self, pipeline: Pipeline, fctx: context.FlowContext, flow: http.HTTPFlow) -> None:
        req = flow.request
        forwarded = flow.response is None
        header_parent = propagation.parent_from_headers(req.headers)
        start = int(req.timestamp_start * 1e9)
        now = time.time_ns()
        spans = self._flows[flow] = _Spans()
        spans.sent_ns = now
        decisions = match_decisions(fctx.messages, fctx.decisions) if fctx.messages else [None]
        carriers: list[dict[str, str] | None] = []
        for msg, decision in zip(fctx.messages or [None], decisions):
            parent = (propagation.parent_from_meta(msg.obj) if msg is not None else None) or header_parent
            server = pipeline.tracer.start_server(server_name(msg, req), parent, start)
            client = None
            if forwarded and (decision is None or decision.allowed or decision.shadow):
                client = pipeline.tracer.start_child(server, now)
            spans.pairs.append((server, client))
            carriers.append(client.carrier() if client else None)
        if not forwarded:
            return
        first = next((c for c in carriers if c), None)
        if first is None:
            return  # nothing forwarded is traced
        propagation.propagate(req, first, carriers if fctx.messages else None, parsed_for(fctx, req))

    def observe(self, flow: http.HTTPFlow, records: list[dict[str, Any]]) -> None:
        route = records[0].get("route")
        fctx = context.get(flow)
        sinks = self.routes.sinks.get(route)
        if sinks:
            record = kong_record(fctx, flow, records)
            for sink in sinks:
                sink.submit(record)
        pipeline = self._pipeline(route)
        llm_state = fctx.ai if fctx is not None else None  # an LLM route's call: the MCP tool calls it made
        if pipeline is None:
            llm_tools.forget(llm_state)
            return
        spans = self._flows.pop(flow, None)
        req, resp = flow.request, flow.response
        end = resp.timestamp_end if resp is not None and resp.timestamp_end else \
            (flow.error.timestamp if flow.error is not None else time.time())
        end_ns = int(end * 1e9)
        version = header(req.headers, "mcp-protocol-version")
        http_version = req.http_version.removeprefix("HTTP/")
        # JSON-RPC error codes (or tool_error) by request id: of the gateway's own answer, or the upstream's
        rpc_errors = _gateway_errors(flow) if records[0]["http"]["upstream_status"] is None else \
            answers.upstream_errors(flow)
        upstream = (req.host, req.port)
        failed = flow.error is not None
        for i, record in enumerate(records):
            pair = spans.pairs[i] if spans is not None and i < len(spans.pairs) else None
            if pair is None:  # refused before `request` (at the headers): the whole span now
                pair = (pipeline.tracer.start_server(conv.span_name(record), propagation.parent_from_headers(req.headers),
                                                     int(req.timestamp_start * 1e9)), None)
            server, client = pair
            rpc_id = (record.get("jsonrpc") or {}).get("id")
            code = rpc_errors.get(answers.id_key(rpc_id)) if rpc_errors else None
            plan = plans.plan(record, version, http_version, code, failed, upstream, self._tool)
            if client is not None and client.sampled:  # (an unsampled span takes no attribute work)
                pipeline.tracer.end(client, plan.name, SpanKind.CLIENT,
                                    plans.attributes(plan, plan.client_base, span_attributes.message_own(record)),
                                    plan.client_status, end_ns)
            if server.sampled:
                pipeline.tracer.end(server, plan.name, SpanKind.SERVER,
                                    plans.attributes(plan, plan.server_base, plans.server_own(record)),
                                    plan.server_status, end_ns)
                if fctx is not None and fctx.rest_calls:  # a tools/call the gateway answered with REST calls
                    rest_spans.end_spans(pipeline.tracer, server, fctx.rest_calls, rpc_id)
            pipeline.server_duration.record(max(0.0, end - req.timestamp_start), plan.metric_attributes, plan.metric_key)
            if client is not None:
                began = spans.sent_ns / 1e9 if spans is not None and spans.sent_ns else req.timestamp_start
                pipeline.client_duration.record(max(0.0, end - began), plan.metric_attributes, plan.metric_key)
        if llm_state is not None:
            client = spans.pairs[0][1] if spans is not None and spans.pairs else None
            if client is not None and client.sampled:
                llm_tools.end_spans(pipeline.tracer, client, llm_state, end_ns)
            else:
                llm_tools.forget(llm_state)
        ended = self._sessions.observe(flow, records)
        if ended is not None:
            attrs = session_attributes(flow, route, ended[1])
            pipeline.server_session_duration.record(ended[0], attrs)
            attrs["server.address"], attrs["server.port"] = upstream
            pipeline.client_session_duration.record(ended[0], attrs)

    def _tool(self, record: dict[str, Any]) -> str | None:
        name = conv.target_of(record) if record.get("primitive") == "tool" else None
        if name is None:
            return None
        if name in self._tools or len(self._tools) < MAX_TOOLS:
            self._tools.add(name)
            return name
        return None


def parsed_for(fctx: context.FlowContext, req: http.Request):
    """The gateway's strict parse of the body it forwards, while that body is the very bytes object
    the parse was made from (a phase that rewrites the body sets a new one); None: parse it again.
    (Messages are never changed in place: a phase that changes one replaces it.)"""
    parsed = fctx.parsed
    if parsed is not None and req.raw_content is parsed[0]:
        return list(parsed[1]), parsed[2]
    return None


def server_name(msg, req: http.Request) -> str:
    return req.method if msg is None else (msg.method or msg.kind)


def _gateway_errors(flow: http.HTTPFlow) -> dict[str, int | str] | None:
    """JSON-RPC error codes (by request id) of an answer the gateway wrote itself: small JSON."""
    resp = flow.response
    # (mitmproxy sends the gateway's own answers whole, whatever `stream` says: raw_content is kept)
    if resp is None or resp.raw_content is None:
        return None
    if header(resp.headers, "content-type", "").split(";")[0].strip().lower() != "application/json":
        return None
    out: dict[str, int | str] = {}
    answers.body_errors(resp.raw_content, out)
    return out


class DropCollector:
    """Prometheus: spans exported and lost (mcp_gateway_telemetry_spans), beside the native metrics."""

    def __init__(self, telemetry: Telemetry):
        self.telemetry = telemetry

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        counts = self.telemetry.counts
        family = CounterMetricFamily("mcp_gateway_telemetry_spans", "OpenTelemetry spans, by outcome of their export",
                                     labels=["outcome"])
        family.add_metric(["exported"], counts.exported if counts else 0)
        family.add_metric(["dropped"], counts.dropped if counts else 0)
        yield family
