"""Prometheus metrics, served on their own port when asked for:

    --set mcp_metrics=127.0.0.1:9464        (a bare port listens on 127.0.0.1; empty: off)

Counts come from the audit records (the same decisions the audit log holds), so the two always
agree. Every label has a bounded set of values, whatever clients send: routes and consumer groups
are those of the policy, methods those of MCP, and tools those the policy names plus the first
MAX_TOOLS names seen in allowed calls; anything else is counted as "other"."""

from __future__ import annotations

import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

from mitmproxy import ctx, exceptions, http
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from . import context
from .limits.metrics import LimitsCollector
from .policy.derived import PerPolicy
from .protocol.jsonrpc import KNOWN_METHODS

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from .auditlog import AuditLog
    from .policy.models import Policy
    from .policy.store import PolicyStore

log = logging.getLogger("mcpgw.metrics")

MAX_TOOLS = 200
NONE, OTHER = "none", "other"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def parse_address(value: str) -> tuple[str, int] | None:
    """HOST:PORT, [IPv6]:PORT or PORT (loopback) -> (host, port); empty -> None."""
    value = value.strip()
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT or PORT, got {value!r}")
    return host, int(port)


def _policy_tools(policy: Policy) -> frozenset[str]:
    return frozenset(t.name for route in policy.routes.values() if route.acl is not None for t in route.acl.tools)


class Metrics:
    """Prometheus collectors in a registry of their own, fed by the audit log's records."""

    def __init__(self, store: PolicyStore, audit_log: AuditLog):
        self.store = store
        self.audit_log = audit_log
        self.registry = CollectorRegistry()
        self.requests = Counter("mcp_gateway_requests", "HTTP requests on governed routes, by status code",
                                ["route", "mode", "code"], registry=self.registry)
        self.decisions = Counter("mcp_gateway_decisions",
                                 "Governed JSON-RPC messages (and requests refused before any message was read), by decision",
                                 ["route", "method", "tool", "consumer_group", "decision"], registry=self.registry)
        self.duration = Histogram("mcp_gateway_request_duration_seconds",
                                  "Time from the request's arrival to the end of the response, per governed message",
                                  ["route", "method", "tool", "consumer_group"], buckets=DURATION_BUCKETS,
                                  registry=self.registry)
        self.registry.register(_StateCollector(store, audit_log))
        self.registry.register(LimitsCollector())  # rate limits and their Redis (limits/)
        self._policy_tools = PerPolicy(_policy_tools)
        self._seen_tools: set[str] = set()
        self._address: tuple[str, int] | None = None
        self._server: tuple[WSGIServer, threading.Thread] | None = None
        self._startup_error: str | None = None  # metrics were asked for and could not be served

    # -- lifecycle -----------------------------------------------------------------------------

    def load(self, loader) -> None:
        loader.add_option("mcp_metrics", str, "",
                          "Serve Prometheus metrics at HOST:PORT (a bare PORT listens on 127.0.0.1). Empty: off.")

    def configure(self, updated: set[str]) -> None:
        # Started here rather than in `running`: after a script reload mitmproxy configures the
        # new addon but does not run its `running` hook again.
        if "mcp_metrics" not in updated:
            return
        try:
            try:
                address = parse_address(ctx.options.mcp_metrics)
            except ValueError as e:
                raise exceptions.OptionsError(f"mcp_metrics: {e}") from None
            if address == self._address:
                return
            self._stop()
            if address is not None:
                self._start(address)
                self._startup_error = None
        except exceptions.OptionsError as e:
            self._startup_error = self._startup_error or str(e)
            raise

    def running(self) -> None:
        if self._startup_error is not None:
            print(f"MCP gateway: {self._startup_error}", file=sys.stderr, flush=True)
            raise SystemExit(1)  # metrics were asked for: a wrong address is a configuration error

    def done(self) -> None:
        self._stop()

    def _start(self, address: tuple[str, int]) -> None:
        try:
            server, thread = start_http_server(address[1], address[0], registry=self.registry)
        except OSError as e:
            raise exceptions.OptionsError(f"mcp_metrics: cannot listen on {address[0]}:{address[1]}: {e.strerror}") from None
        self._server, self._address = (server, thread), address
        self.audit_log.observers.append(self.observe)  # counted only while served: no cost when off
        host, port = server.server_address[:2]
        log.info("metrics listening at http://%s/metrics", f"[{host}]:{port}" if ":" in host else f"{host}:{port}")

    def _stop(self) -> None:
        if self._server is not None:
            server, thread = self._server
            server.shutdown()
            server.server_close()
            thread.join()
            self._server = self._address = None
            if self.observe in self.audit_log.observers:
                self.audit_log.observers.remove(self.observe)

    @property
    def port(self) -> int | None:
        return self._server[0].server_address[1] if self._server else None

    # -- counting ------------------------------------------------------------------------------

    def observe(self, flow: http.HTTPFlow, records: list[dict[str, Any]]) -> None:
        fctx = context.get(flow)
        snap = fctx.snapshot if fctx is not None else self.store.current
        policy = snap.policy if snap is not None else None
        first = records[0]
        route = self._route(first.get("route"), policy)
        status = first["http"]["status"]
        self.requests.labels(route, first["mode"], str(status) if status is not None else "error").inc()
        for record in records:
            method = self._method(record.get("jsonrpc"))
            tool = self._tool(record, policy)
            group = self._group(record.get("consumer"), policy)
            self.decisions.labels(route, method, tool, group, record["decision"]).inc()
            if record.get("duration_ms") is not None:
                self.duration.labels(route, method, tool, group).observe(record["duration_ms"] / 1000)

    @staticmethod
    def _route(name: str | None, policy: Policy | None) -> str:
        if name is None:
            return NONE
        return name if policy is None or name in policy.routes else OTHER

    @staticmethod
    def _method(rpc: dict[str, Any] | None) -> str:
        if rpc is None:
            return NONE  # a request without JSON-RPC messages (GET stream, DELETE, early refusal)
        if rpc.get("method") is None:
            return rpc["kind"]  # the client's response to a server request: "response" or "error"
        return rpc["method"] if rpc["method"] in KNOWN_METHODS else OTHER

    def _tool(self, record: dict[str, Any], policy: Policy | None) -> str:
        name = record.get("name")
        if record.get("primitive") != "tool" or not isinstance(name, str):
            return NONE
        if name in self._seen_tools or (policy is not None and name in self._policy_tools(policy)):
            return name
        # Only names the upstream was actually asked to run count; denied names are client-chosen.
        if record["decision"] == "allow" and len(self._seen_tools) < MAX_TOOLS:
            self._seen_tools.add(name)
            return name
        return OTHER

    @staticmethod
    def _group(consumer: dict[str, Any] | None, policy: Policy | None) -> str:
        if not consumer or not consumer.get("groups"):
            return NONE
        if policy is None:
            return OTHER
        # A consumer in several groups is counted under the first one the policy declares.
        return next((g for g in consumer["groups"] if g in policy.consumer_groups), OTHER)


class _StateCollector:
    """Values read at scrape time: policy reloads and the active version, audit log health."""

    def __init__(self, store: PolicyStore, audit_log: AuditLog):
        self.store = store
        self.audit_log = audit_log

    def collect(self):
        reloads = CounterMetricFamily("mcp_gateway_policy_reloads", "Policy load attempts, by result", labels=["result"])
        reloads.add_metric(["ok"], self.store.reloads_ok)
        reloads.add_metric(["failed"], self.store.reloads_failed)
        yield reloads
        last_ok = GaugeMetricFamily("mcp_gateway_policy_last_reload_success",
                                    "1 if the last policy load attempt succeeded, 0 if it was rejected")
        last_ok.add_metric([], 0 if self.store.last_error is not None else 1)
        yield last_ok
        snap = self.store.current
        if snap is not None:
            info = GaugeMetricFamily("mcp_gateway_policy_info", "The active policy (always 1)",
                                     labels=["version", "digest", "source"])
            info.add_metric([str(snap.version), snap.digest, snap.source], 1)
            yield info
            loaded = GaugeMetricFamily("mcp_gateway_policy_loaded_timestamp_seconds",
                                       "When the active policy was loaded (Unix time)")
            loaded.add_metric([], snap.loaded_at)
            yield loaded
        written = CounterMetricFamily("mcp_gateway_audit_records", "Audit records written to the audit log")
        written.add_metric([], self.audit_log.records_written)
        yield written
        failed = CounterMetricFamily("mcp_gateway_audit_failures",
                                     "Audit records lost: could not be built, serialized or written")
        failed.add_metric([], self.audit_log.records_lost)
        yield failed
