"""Prometheus metrics: counts from audit records, bounded labels, the HTTP endpoint."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
import yaml
from mitmproxy import exceptions, http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mcpgw import context, metrics
from mcpgw.auditlog import AuditLog
from mcpgw.context import Decision, FlowContext
from mcpgw.identity.consumers import Identity
from mcpgw.metrics import Metrics, parse_address
from mcpgw.policy.store import PolicyStore
from mcpgw.protocol.jsonrpc import parse_strict

POLICY = {
    "consumer_groups": ["admin", "developer"],
    "services": {"gh": {"url": "https://api.githubcopilot.com/mcp"}},
    "routes": {"github-mcp": {"service": "gh", "paths": ["/github-mcp"],
                              "acl": {"tools": [{"name": "push_files", "acl": {"allow": ["admin"]}}]}}},
}
DEV = Identity("dev-user", groups=("developer",))


@pytest.fixture
def store(tmp_path):
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump(POLICY))
    s = PolicyStore()
    s.load(p)
    return s


@pytest.fixture
def observed(store):
    audit_log = AuditLog(store)
    metrics = Metrics(store, audit_log)
    assert audit_log.observers == []  # not served: nothing is counted, nothing costs
    metrics._start(("127.0.0.1", 0))
    assert audit_log.observers == [metrics.observe]
    yield audit_log, metrics
    metrics._stop()
    assert audit_log.observers == []


def call(audit_log: AuditLog, store: PolicyStore, tool: str, allowed: bool, identity=DEV) -> None:
    """A tools/call flow through the audit log's hooks, as the gateway would leave it."""
    flow = tflow.tflow()
    flow.client_conn.proxy_mode = ProxyMode.parse("reverse:http://127.0.0.1:9")
    flow.request.path = "/github-mcp"
    flow.request.content = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool}}).encode()
    ctx = context.attach(flow, FlowContext(store.current, "gateway", store.current.routes.match_gateway("/github-mcp")))
    ctx.identity = identity
    ctx.messages, _ = parse_strict(flow.request.content)
    ctx.decisions = [Decision(allowed, "tools/call", "tool", tool, "rule", "acl", message_id=1)]
    audit_log.requestheaders(flow)
    flow.response = http.Response.make(200, b"{}", {"content-type": "application/json"})
    flow.response.timestamp_end = flow.request.timestamp_start + 0.042
    audit_log.response(flow)


def samples(registry_text: str, name: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(registry_text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_counts_and_bounded_labels(observed, store, monkeypatch):
    audit_log, m = observed
    monkeypatch.setattr(metrics, "MAX_TOOLS", 2)
    call(audit_log, store, "push_files", False)  # named by the policy
    call(audit_log, store, "search_code", True)
    call(audit_log, store, "list_issues", True)
    call(audit_log, store, "get_me", True)  # beyond the cap
    call(audit_log, store, "x" * 40, False)  # denied and unknown: a client-chosen name
    call(audit_log, store, "search_code", True, identity=Identity("svc", groups=("from-a-token-claim",)))
    call(audit_log, store, "search_code", True, identity=None)
    text = generate_latest(m.registry).decode()
    decisions = samples(text, "mcp_gateway_decisions_total")

    def count(tool, decision, group="developer"):
        key = (("consumer_group", group), ("decision", decision), ("method", "tools/call"),
               ("route", "github-mcp"), ("tool", tool))
        return decisions.get(key, 0)

    assert count("push_files", "deny") == 1
    assert count("search_code", "allow") == 1 and count("list_issues", "allow") == 1
    assert count("other", "allow") == 1 and count("other", "deny") == 1
    assert count("search_code", "allow", "other") == 1 and count("search_code", "allow", "none") == 1
    requests = samples(text, "mcp_gateway_requests_total")
    assert requests == {(("code", "200"), ("mode", "gateway"), ("route", "github-mcp")): 7}
    durations = samples(text, "mcp_gateway_request_duration_seconds_sum")
    assert durations[(("consumer_group", "developer"), ("method", "tools/call"), ("route", "github-mcp"),
                      ("tool", "push_files"))] == pytest.approx(0.042)


def test_endpoint_serves_counts_policy_state_and_stops(observed, store):
    audit_log, m = observed
    with taddons.context(audit_log, m) as tctx:
        tctx.configure(m, mcp_metrics="127.0.0.1:0")
        m.running()
        call(audit_log, store, "push_files", False)
        store.reload(force=True)
        text = httpx.get(f"http://127.0.0.1:{m.port}/metrics", timeout=10).text
        port = m.port
        m.done()
    assert samples(text, "mcp_gateway_policy_reloads_total") == {(("result", "failed"),): 0, (("result", "ok"),): 2}
    info = samples(text, "mcp_gateway_policy_info")
    assert info == {(("digest", store.current.digest), ("source", store.current.source), ("version", "2")): 1}
    assert samples(text, "mcp_gateway_policy_last_reload_success") == {(): 1}
    assert sum(samples(text, "mcp_gateway_decisions_total").values()) == 1
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_option_parsing_and_busy_port(observed):
    assert parse_address("") is None
    assert parse_address("9464") == ("127.0.0.1", 9464)
    assert parse_address("0.0.0.0:9464") == ("0.0.0.0", 9464)
    assert parse_address("[::1]:9464") == ("::1", 9464)
    for bad in ("host:", "host:port", "1:99999"):
        with pytest.raises(ValueError):
            parse_address(bad)
    audit_log, m = observed
    with taddons.context(audit_log, m) as tctx:
        with pytest.raises(exceptions.OptionsError, match="mcp_metrics"):
            tctx.configure(m, mcp_metrics="localhost:http")
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            with pytest.raises(exceptions.OptionsError, match="cannot listen"):
                tctx.configure(m, mcp_metrics=f"127.0.0.1:{busy.getsockname()[1]}")
        with pytest.raises(SystemExit):  # asked for at start-up and not available: mitmdump stops
            m.running()
