"""Kong's logging plugins on a decK route, service or globally -> the route's `telemetry`
(docs/telemetry.md):

file-log:       path -> telemetry.file_log.path (Kong's log record, one JSON line per request);
                reopen is inert (the file is reopened when it is moved, as the audit log is).
http-log:       http_endpoint, method, content_type, headers, timeout (ms), queue.max_batch_size,
                queue.max_coalescing_delay, queue.max_entries -> telemetry.http_log.
prometheus:     -> telemetry.prometheus: the native metrics count every route alike; they are served
                with --set mcp_metrics (Kong serves them on its status listener).
opentelemetry:  traces_endpoint (or endpoint), resource_attributes, sampling_rate ->
                telemetry.opentelemetry; metrics go to the same collector's /v1/metrics.

Options that only tune Kong's own machinery are inert; custom_fields_by_lua (Lua code) is refused."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .deck_registry import FILE_LOG, HTTP_LOG, LOGGING_PLUGINS, OTEL, PROMETHEUS, Plugin, RouteBuild, take_options

if TYPE_CHECKING:
    from .deck import Translator


# Kong's options that change nothing here (Kong's queue and connection tuning, metric families the
# native metrics have or do not split by).
_KONG_QUEUE = ("max_retry_time", "initial_retry_delay", "max_retry_delay", "max_bytes", "concurrency_limit")
INERT: dict[str, tuple[str, ...]] = {
    FILE_LOG: ("reopen",),
    HTTP_LOG: ("keepalive", "retry_count", "queue_size", "flush_timeout"),
    PROMETHEUS: ("per_consumer", "status_code_metrics", "latency_metrics", "bandwidth_metrics",
                 "upstream_health_metrics", "ai_metrics", "wasm_metrics"),
    OTEL: ("batch_span_count", "batch_flush_delay", "connect_timeout", "send_timeout", "read_timeout",
           "header_type", "propagation", "http_response_header_for_traceid", "logs_endpoint", "queue",
           "sampling_strategy"),
}


def _options(plugin: Plugin, supported: tuple[str, ...], t: "Translator") -> dict[str, Any]:
    inert = INERT.get(plugin.name, ())
    config = {k: v for k, v in plugin.config.items() if k not in inert}
    return take_options(Plugin(plugin.name, config, plugin.loc, plugin.scope, plugin.ordering, plugin.index),
                        supported, t.problems)


def _section(build: RouteBuild) -> dict[str, Any]:
    return build.native.setdefault("telemetry", {})


def file_log(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    config = _options(plugin, ("path",), t)
    if "path" not in config:
        plugin.problem(t.problems, "file-log needs a path", "config")
        return
    _section(build)["file_log"] = {"path": config["path"]}
    build.origin(t, "telemetry", plugin, "file_log")


def http_log(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    config = _options(plugin, ("http_endpoint", "method", "content_type", "headers", "timeout", "queue"), t)
    if "http_endpoint" not in config:
        plugin.problem(t.problems, "http-log needs an http_endpoint", "config")
        return
    native: dict[str, Any] = {"endpoint": config["http_endpoint"]}
    for key in ("method", "content_type", "headers"):
        if key in config:
            native[key] = config[key]
    if isinstance(config.get("timeout"), (int, float)):
        native["timeout"] = config["timeout"] / 1000  # Kong: milliseconds
    queue = config.get("queue") or {}
    if isinstance(queue, dict):
        for key in ("max_batch_size", "max_coalescing_delay", "max_entries"):
            if queue.get(key) is not None:
                native[key] = queue[key]
        for key in queue:
            if key not in ("max_batch_size", "max_coalescing_delay", "max_entries", *_KONG_QUEUE, "name"):
                plugin.problem(t.problems, "queue option not supported by this gateway", "config", "queue", key)
    _section(build)["http_log"] = native
    build.origin(t, "telemetry", plugin, "http_log")


def prometheus(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    _options(plugin, (), t)
    _section(build)["prometheus"] = True


def opentelemetry(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    config = _options(plugin, ("traces_endpoint", "endpoint", "metrics_endpoint", "resource_attributes",
                               "sampling_rate", "headers"), t)
    endpoint = config.get("traces_endpoint") or config.get("endpoint")
    if not endpoint:
        plugin.problem(t.problems, "opentelemetry needs a traces_endpoint", "config")
        return
    if config.get("headers"):
        # the exporter's headers are the collector's credential: they come from OTEL_EXPORTER_OTLP_HEADERS
        plugin.problem(t.problems, "headers are not taken from the decK file: set OTEL_EXPORTER_OTLP_HEADERS in the "
                                   "gateway's environment", "config", "headers")
    native: dict[str, Any] = {"endpoint": endpoint}
    if config.get("sampling_rate") is not None:
        native["sampling"] = config["sampling_rate"]
    if config.get("resource_attributes"):
        native["resource_attributes"] = config["resource_attributes"]
    if "service.name" in (config.get("resource_attributes") or {}):
        native["service_name"] = config["resource_attributes"]["service.name"]
    _section(build)["opentelemetry"] = native
    build.origin(t, "telemetry", plugin, "opentelemetry")


HANDLERS = {FILE_LOG: file_log, HTTP_LOG: http_log, PROMETHEUS: prometheus, OTEL: opentelemetry}
