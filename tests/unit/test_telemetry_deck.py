"""Kong's logging plugins in decK files: file-log, http-log, prometheus, opentelemetry on a route,
a service or globally -> routes.<name>.telemetry; what cannot be mapped is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mcpgw.policy.loader import PolicyError, load_policy_file

CASES = Path(__file__).resolve().parents[3] / "shared" / "kong-docs" / "cases"


def deck(*plugins: dict, route_plugins: tuple[dict, ...] = ()) -> dict:
    return {"_format_version": "3.0",
            "services": [{"name": "svc", "url": "http://127.0.0.1:9/mcp",
                          "routes": [{"name": "r", "paths": ["/mcp"], "plugins": list(route_plugins)}]}],
            "plugins": [{"name": "key-auth", "config": {"key_names": ["apikey"]}}, *plugins],
            "consumers": [{"username": "u", "keyauth_credentials": [{"key": "k"}]}]}


def load(tmp_path, data: dict, monkeypatch=None):
    path = tmp_path / "kong.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_policy_file(path)[0]


def test_kong_howto_series_acls_then_observe_loads_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv("DECK_FILE_LOG_PATH", str(tmp_path / "kong.log"))
    policy = load_policy_file(CASES / "16-series-mcp-acls-observe-file-log.yaml")[0]
    t = policy.routes["mcp-acl-route"].telemetry
    assert t.file_log.path == str(tmp_path / "kong.log") and t.http_log is None
    assert policy.routes["mcp-acl-route"].acl is not None  # the access-control part still applies


def test_prometheus_as_in_the_observe_howto(tmp_path):
    """The prometheus plugin of Kong's "observe traffic for MCP tools" how-to (case 19), on a route."""
    case = yaml.safe_load((CASES / "19-series-mcp-conversion-observe.yaml").read_text())
    plugin = next(p for p in case["plugins"] if p["name"] == "prometheus")
    plugin = {k: v for k, v in plugin.items() if k != "route"}
    policy = load(tmp_path, deck(route_plugins=(plugin,)))
    assert policy.routes["r"].telemetry.prometheus is True


def test_http_log_options(tmp_path):
    policy = load(tmp_path, deck({"name": "http-log", "config": {
        "http_endpoint": "https://logs.example.com/kong", "method": "PUT", "timeout": 2500, "keepalive": 60000,
        "content_type": "application/json; charset=utf-8", "headers": {"X-Team": "platform"},
        "queue": {"max_batch_size": 50, "max_coalescing_delay": 0.5, "max_entries": 100, "max_retry_time": 60}}}))
    h = policy.routes["r"].telemetry.http_log
    assert (h.endpoint, h.method, h.timeout, h.max_batch_size, h.max_coalescing_delay, h.max_entries) == (
        "https://logs.example.com/kong", "PUT", 2.5, 50, 0.5, 100)
    assert {k: v.reveal() for k, v in h.headers.items()} == {"X-Team": "platform"}
    assert h.content_type == "application/json; charset=utf-8"


def test_opentelemetry_options(tmp_path):
    policy = load(tmp_path, deck({"name": "opentelemetry", "config": {
        "traces_endpoint": "http://otel-collector:4318/v1/traces", "sampling_rate": 0.25, "header_type": "w3c",
        "resource_attributes": {"service.name": "kong-mcp", "deployment.environment": "prod"}}}))
    o = policy.routes["r"].telemetry.opentelemetry
    assert o.signal_url("metrics") == "http://otel-collector:4318/v1/metrics"
    assert (o.sampling, o.service_name, o.resource_attributes["deployment.environment"]) == (0.25, "kong-mcp", "prod")


def test_route_plugin_wins_over_the_global_one(tmp_path):
    policy = load(tmp_path, deck({"name": "file-log", "config": {"path": "/tmp/global.log"}},
                                 route_plugins=({"name": "file-log", "config": {"path": "/tmp/route.log"}},)))
    assert policy.routes["r"].telemetry.file_log.path == "/tmp/route.log"


@pytest.mark.parametrize("plugin, message", [
    ({"name": "file-log", "config": {}}, "needs a path"),
    ({"name": "file-log", "config": {"path": "/tmp/x", "custom_fields_by_lua": {"a": "return 1"}}}, "custom_fields_by_lua"),
    ({"name": "http-log", "config": {"method": "POST"}}, "needs an http_endpoint"),
    ({"name": "http-log", "config": {"http_endpoint": "ftp://x"}}, r"http\(s\) URL"),
    ({"name": "http-log", "config": {"http_endpoint": "http://x", "queue": {"vault": "{vault://env/LOG_TOKEN}"}}},
     "vault reference"),
    ({"name": "opentelemetry", "config": {"traces_endpoint": "http://c:4318/v1/traces", "headers": {"a": "b"}}},
     "OTEL_EXPORTER_OTLP_HEADERS"),
    ({"name": "opentelemetry", "config": {"traces_endpoint": "http://c:4318/v1/traces", "sampling_rate": 2}}, "sampling"),
])
def test_what_cannot_be_mapped_is_refused(tmp_path, plugin, message):
    with pytest.raises(PolicyError, match=message):
        load(tmp_path, deck(plugin))


def test_http_log_header_vault_reference_is_resolved_and_never_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("LOG_TOKEN", "log-token-s3cr3t")
    policy = load(tmp_path, deck({"name": "http-log", "config": {
        "http_endpoint": "http://x", "headers": {"Authorization": "Bearer {vault://env/log-token}"}}}))
    h = policy.routes["r"].telemetry.http_log
    assert h.headers["Authorization"].reveal() == "Bearer log-token-s3cr3t"
    assert "s3cr3t" not in repr(h) and "s3cr3t" not in h.model_dump_json()
