"""Audit records, the hash-chained file format, its verifier, and the writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from mcpgw import audit, auditchain, context, redaction
from mcpgw.auditchain import GENESIS, ChainHead, seal, verify
from mcpgw.auditlog import AuditLog, ChainWriter
from mcpgw.context import Decision, FlowContext
from mcpgw.identity.consumers import Identity
from mcpgw.policy.store import PolicyStore
from mcpgw.protocol.jsonrpc import parse_strict

UPSTREAM_TOKEN = "ghp_upstreamSECRETtoken1234"
API_KEY = "dev-api-key-SECRET"
CLIENT_SECRET = "introspection-client-SECRET"


def write_chain(path: Path, n: int) -> list[bytes]:
    head, lines = ChainHead(), []
    for i in range(n):
        line, head = seal({"event": i}, head)
        lines.append(line)
    path.write_bytes(b"".join(lines))
    return lines


# -- the file format ---------------------------------------------------------------------------

def test_sealed_line_hashes_its_own_bytes(tmp_path):
    line, head = seal({"a": 1, "text": "é\n"}, ChainHead())
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    record = auditchain.parse_line(line[:-1])
    assert record["seq"] == 1 and record["prev"] == GENESIS and record["hash"] == head.hash
    assert list(record)[0] == "seq" and list(record)[-2:] == ["prev", "hash"]


def test_intact_chain_verifies(tmp_path):
    f = tmp_path / "audit.jsonl"
    write_chain(f, 5)
    result = verify([f])
    assert result.ok and result.records == 5 and result.head.seq == 5


def test_deleted_line_is_reported_at_its_place(tmp_path):
    f = tmp_path / "audit.jsonl"
    lines = write_chain(f, 6)
    f.write_bytes(b"".join(lines[:3] + lines[4:]))
    result = verify([f])
    assert not result.ok and result.line == 4
    assert "seq 4 missing" in result.problem


def test_deleted_first_line_is_reported(tmp_path):
    f = tmp_path / "audit.jsonl"
    lines = write_chain(f, 3)
    f.write_bytes(b"".join(lines[1:]))
    result = verify([f])
    assert result.line == 1 and "seq 1 missing at the start" in result.problem
    assert verify([f], continued=True).ok  # a file rotated out of a longer chain


def test_edited_line_is_reported(tmp_path):
    f = tmp_path / "audit.jsonl"
    lines = write_chain(f, 4)
    lines[2] = lines[2].replace(b'"event":2', b'"event":7')
    f.write_bytes(b"".join(lines))
    result = verify([f])
    assert result.line == 3 and "edited" in result.problem


def test_edited_line_with_recomputed_hash_is_caught_by_the_next_one(tmp_path):
    f = tmp_path / "audit.jsonl"
    lines = write_chain(f, 4)
    forged, _ = seal({"event": "forged"}, ChainHead(2, auditchain.parse_line(lines[1][:-1])["hash"]))
    lines[2] = forged  # same seq and prev, valid hash of its own
    f.write_bytes(b"".join(lines))
    result = verify([f])
    assert result.line == 4 and "previous line was edited" in result.problem


def test_reordered_lines_are_reported(tmp_path):
    f = tmp_path / "audit.jsonl"
    lines = write_chain(f, 5)
    lines[1], lines[2] = lines[2], lines[1]
    f.write_bytes(b"".join(lines))
    result = verify([f])
    assert result.line == 2 and "missing" in result.problem


def test_truncated_last_line_is_reported(tmp_path):
    f = tmp_path / "audit.jsonl"
    lines = write_chain(f, 3)
    f.write_bytes(b"".join(lines[:2]) + lines[2][:40])
    result = verify([f])
    assert result.line == 3 and "incomplete" in result.problem


def test_rotated_files_verify_as_one_chain(tmp_path):
    lines = write_chain(tmp_path / "all", 6)
    old, new = tmp_path / "audit.jsonl.1", tmp_path / "audit.jsonl"
    old.write_bytes(b"".join(lines[:4]))
    new.write_bytes(b"".join(lines[4:]))
    assert verify([old, new]).records == 6
    assert not verify([new]).ok and verify([new], continued=True).ok
    assert not verify([new, old]).ok


def test_read_head_skips_a_damaged_tail(tmp_path):
    f = tmp_path / "audit.jsonl"
    lines = write_chain(f, 3)
    f.write_bytes(b"".join(lines) + b'{"seq":4,"ti')
    head, damaged = auditchain.read_head(f)
    assert head.seq == 3 and damaged == 1
    (tmp_path / "other").write_text("not an audit log\n")
    with pytest.raises(auditchain.BrokenRecord):
        auditchain.read_head(tmp_path / "other")


# -- the writer --------------------------------------------------------------------------------

def pending(n: int) -> audit.PendingRecord:
    return audit.PendingRecord({"n": n})


def test_writer_writes_everything_on_close_and_continues_after_restart(tmp_path):
    f = tmp_path / "audit.jsonl"
    w = ChainWriter(str(f))
    w.open()
    for i in range(300):
        w.submit(pending(i))
    w.close()
    assert verify([f]).records == 300
    # a crash left half a line behind; the restarted writer starts a new line and continues
    with open(f, "ab") as out:
        out.write(b'{"seq":301,"n":')
    w = ChainWriter(str(f))
    w.open()
    assert w.head.seq == 300
    w.submit(pending(300))
    w.close()
    lines = f.read_bytes().splitlines()
    assert json.loads(lines[-1])["seq"] == 301
    result = verify([f])
    assert result.line == 301 and "not an audit record" in result.problem


def test_writer_follows_a_rename_and_keeps_the_chain(tmp_path):
    f = tmp_path / "audit.jsonl"
    w = ChainWriter(str(f))
    w.open()
    w.submit(pending(1))
    w.submit(pending(2))
    assert "reopened" in w.reopen()  # nothing moved yet: same file again
    f.rename(tmp_path / "audit.jsonl.1")
    assert "chain continues after seq 2" in w.reopen()
    w.submit(pending(3))
    w.close()
    assert verify([tmp_path / "audit.jsonl.1", f]).records == 3
    assert json.loads(f.read_text())["seq"] == 3


# -- records -----------------------------------------------------------------------------------

POLICY = {
    "consumer_groups": ["admin", "developer"],
    "consumers": {"dev-user": {"groups": ["developer"], "keys": [API_KEY]}},
    "services": {"gh": {"url": "https://api.githubcopilot.com/mcp"}},
    "routes": {"github-mcp": {"service": "gh", "paths": ["/github-mcp"]},
               "logged": {"service": "gh", "paths": ["/logged"], "audit": {"log_payloads": True},
                          "oauth": {"authorization_servers": ["https://as.example.com"],
                                    "introspection_endpoint": "https://as.example.com/introspect",
                                    "client_id": "gateway", "client_secret": "{env://MCPGW_TEST_CLIENT_SECRET}"}}},
}
DEV = Identity("dev-user", groups=("developer",), method="key-auth")


@pytest.fixture
def snap(tmp_path, monkeypatch):
    monkeypatch.setenv("MCPGW_TEST_CLIENT_SECRET", CLIENT_SECRET)
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump(POLICY))
    return PolicyStore().load(p)


def governed_flow(snap, body: dict | list | None, *, route="github-mcp", path="/github-mcp?apikey=" + API_KEY,
                  identity=DEV, response: http.Response | None = None) -> tuple[http.HTTPFlow, FlowContext]:
    flow = tflow.tflow()
    flow.client_conn.proxy_mode = ProxyMode.parse("reverse:http://127.0.0.1:9")
    flow.request.path = path
    flow.request.headers["apikey"] = API_KEY
    flow.request.headers["mcp-session-id"] = "sess-1"
    if body is not None:
        flow.request.content = json.dumps(body).encode()
    flow.response = response or http.Response.make(200, b"{}", {"content-type": "application/json"})
    flow.response.timestamp_start, flow.response.timestamp_end = 946681202, 946681203  # as tflow's own
    match = snap.routes.match_gateway(path)
    assert match is not None and match.name == route
    ctx = context.attach(flow, FlowContext(snap, "gateway", match))
    ctx.identity = identity
    if body is not None:
        ctx.messages, ctx.is_batch = parse_strict(flow.request.content)
    return flow, ctx


def obs_for(flow, gateway=False) -> audit.Observation:
    return audit.Observation(client_path=flow.request.path.split("?")[0], answered_by_gateway=gateway)


def test_one_record_per_message_with_its_decision(snap):
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search_code"}},
             {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "push_files"}},
             {"jsonrpc": "2.0", "method": "notifications/initialized"}]
    flow, ctx = governed_flow(snap, batch)
    ctx.decisions = [
        Decision(False, "tools/call", "tool", "push_files", "acl.tools[push_files].allow", "acl", message_id=2),
        Decision(True, "tools/call", "tool", "search_code", "acl.tools[search_code].allow", "acl", message_id=1),
    ]
    records = [p.finish() for p in audit.build(ctx, flow, obs_for(flow))]
    assert [r["jsonrpc"]["id"] for r in records] == [1, 2, None]
    first, second, third = records
    assert first["decision"] == "allow" and first["name"] == "search_code" and first["primitive"] == "tool"
    assert second["decision"] == "deny" and second["rule"] == "acl.tools[push_files].allow"
    assert third["jsonrpc"] == {"id": None, "method": "notifications/initialized", "kind": "notification", "batch": 3}
    assert third["decision"] == "allow" and third["rule"] is None
    assert first["consumer"] == {"name": "dev-user", "id": None, "custom_id": None, "groups": ["developer"],
                                 "method": "key-auth"}
    assert first["route"] == "github-mcp" and first["mode"] == "gateway" and first["session"] == "sess-1"
    assert first["http"] == {"method": "GET", "path": "/github-mcp", "status": 200, "upstream_status": 200}
    assert first["request_bytes"] == len(flow.request.content) and first["response_bytes"] == 2
    assert first["duration_ms"] == 3000 and first["upstream_ms"] == 1000  # tflow timestamps are 1 s apart
    assert first["policy"] == snap.digest[:16] and first["flow"] == flow.id
    assert "payload" not in first


def test_shadow_decision_is_recorded_as_would_deny(snap):
    flow, ctx = governed_flow(snap, {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "push_files"}})
    ctx.decisions = [Decision(False, "tools/call", "tool", "push_files", "acl.default_acl[tools].deny", "acl",
                              message_id=7, shadow=True)]
    (record,) = [p.finish() for p in audit.build(ctx, flow, obs_for(flow))]
    assert record["decision"] == "would_deny" and record["http"]["upstream_status"] == 200


def test_refusal_before_parsing_is_one_http_record(snap):
    refusal = http.Response.make(401, b'{"message":"Unauthorized"}', {"content-type": "application/json"})
    flow, ctx = governed_flow(snap, None, response=refusal, identity=None)
    ctx.answered_by = "identity.keyauth.authenticate"
    (record,) = [p.finish() for p in audit.build(ctx, flow, obs_for(flow, gateway=True))]
    assert record["decision"] == "deny" and record["rule"] == "identity.keyauth.authenticate"
    assert record["reason"] == "Unauthorized" and record["consumer"] is None
    assert record["http"]["status"] == 401 and record["http"]["upstream_status"] is None
    assert record["upstream_ms"] is None and "jsonrpc" not in record


def test_upstream_response_replaced_by_the_gateway(snap):
    replaced = http.Response.make(502, b'{"message":"upstream used an unsupported Content-Encoding"}')
    flow, ctx = governed_flow(snap, None, response=replaced)
    flow.request.method = "GET"
    ctx.answered_by = "streaming.prepare_response"
    (record,) = [p.finish() for p in audit.build(ctx, flow, obs_for(flow))]
    assert record["http"] == {"method": "GET", "path": "/github-mcp", "status": 502, "upstream_status": None}
    assert record["decision"] == "deny" and record["rule"] == "streaming.prepare_response"


def test_refusal_without_route_is_recorded(snap):
    flow = tflow.tflow(resp=http.Response.make(404, b'{"message":"no route matched with those values"}'))
    flow.client_conn.proxy_mode = ProxyMode.parse("reverse:http://127.0.0.1:9")
    (record,) = [p.finish() for p in audit.build(None, flow, obs_for(flow, gateway=True))]
    assert record["route"] is None and record["rule"] == "routing" and record["decision"] == "deny"
    assert record["reason"] == "no route matched with those values" and record["mode"] == "gateway"


def test_records_hold_no_credentials(snap):
    flow, ctx = governed_flow(snap, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    flow.request.headers["authorization"] = f"Bearer {UPSTREAM_TOKEN}"
    text = json.dumps([p.finish() for p in audit.build(ctx, flow, obs_for(flow))])
    assert API_KEY not in text and UPSTREAM_TOKEN not in text and "apikey" not in text


def test_payloads_are_logged_redacted_when_the_route_asks(snap):
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "create_issue", "arguments": {"body": f"secret {CLIENT_SECRET}",
                                                             "headers": f"Authorization: Bearer {UPSTREAM_TOKEN}"}}}
    answer = {"jsonrpc": "2.0", "id": 3, "result": {"content": [{"type": "text", "text": f"echo {CLIENT_SECRET}"}],
                                                    "structuredContent": {"client_secret": "anything-at-all"}}}
    sse = b"event: message\ndata: " + json.dumps({"jsonrpc": "2.0", "method": "notifications/progress"}).encode() + \
        b"\n\nevent: message\ndata: " + json.dumps(answer).encode() + b"\n\n"
    resp = http.Response.make(200, b"", {"content-type": "text/event-stream"})
    flow, ctx = governed_flow(snap, call, route="logged", path="/logged", response=resp)
    obs = obs_for(flow)
    obs.captured, obs.streamed_bytes = bytearray(sse), len(sse)
    (record,) = [p.finish() for p in audit.build(ctx, flow, obs, redact=redaction.for_snapshot(snap))]
    assert record["response_bytes"] == len(sse)
    arguments = record["payload"]["request"]["params"]["arguments"]
    assert arguments == {"body": "secret [redacted]", "headers": "Authorization: Bearer [redacted]"}
    result = record["payload"]["response"]["result"]
    assert result["content"][0]["text"] == "echo [redacted]"
    assert result["structuredContent"] == {"client_secret": "[redacted]"}
    text = json.dumps(record)
    assert CLIENT_SECRET not in text and UPSTREAM_TOKEN not in text and "anything-at-all" not in text


def test_oversized_payload_is_left_out(snap):
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "x", "arguments": {"blob": "a" * (audit.PAYLOAD_LIMIT + 1)}}}
    flow, ctx = governed_flow(snap, call, route="logged", path="/logged")
    (record,) = [p.finish() for p in audit.build(ctx, flow, obs_for(flow), redact=str)]
    assert "omitted" in record["payload"]["request"] and record["payload"]["response"] is None


def test_long_client_strings_are_cut(snap):
    flow, ctx = governed_flow(snap, {"jsonrpc": "2.0", "id": "i" * 5000, "method": "tools/call", "params": {"name": "x"}})
    (record,) = [p.finish() for p in audit.build(ctx, flow, obs_for(flow))]
    assert len(record["jsonrpc"]["id"]) == audit.MAX_TEXT + 3


# -- the addon ---------------------------------------------------------------------------------

def test_addon_writes_governed_flows_and_skips_others(tmp_path, snap):
    f = tmp_path / "audit.jsonl"
    store = PolicyStore()
    store.current = snap
    log = AuditLog(store)
    seen = []
    log.observers.append(lambda flow, records: seen.append(records))
    with taddons.context(log) as tctx:
        tctx.configure(log, mcp_audit=str(f))
        log.running()
        flow, ctx = governed_flow(snap, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        upstream_response, flow.response = flow.response, None
        log.requestheaders(flow)
        flow.response = upstream_response
        log.response(flow)
        log.error(flow)  # a flow is recorded once
        assert "chain continues after seq" in tctx.command(log.reopen)
        passing = tflow.tflow()  # intercept mode, no route: not the gateway's business
        log.requestheaders(passing)
        passing.response = tflow.tresp()
        log.response(passing)
        log.done()
    assert verify([f]).records == 1 and len(seen) == 1
    record = json.loads(f.read_text())
    assert record["jsonrpc"]["method"] == "tools/list" and record["http"]["path"] == "/github-mcp"


def test_addon_counts_streamed_bytes(snap):
    store = PolicyStore()
    store.current = snap
    log = AuditLog(store)
    seen = []
    log.observers.append(lambda flow, records: seen.extend(records))
    log.size_readers.append(lambda: True)
    flow, ctx = governed_flow(snap, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    upstream_response, flow.response = flow.response, None
    log.requestheaders(flow)
    flow.response = upstream_response
    flow.response.stream = lambda chunk: [chunk.upper(), b""] if chunk else []
    log.responseheaders(flow)
    assert flow.response.stream(b"abc") == [b"ABC"] and flow.response.stream(b"de") == [b"DE"]
    assert flow.response.stream(b"") == []
    log.response(flow)
    assert seen[0]["response_bytes"] == 5


def test_streamed_answers_stay_unwrapped_when_nobody_reads_their_size(snap):
    """An observer without a size reader (spans, metrics) and no audit file: mitmproxy relays the
    stream itself, with no Python call per chunk; the record is still made."""
    store = PolicyStore()
    store.current = snap
    log = AuditLog(store)
    seen = []
    log.observers.append(lambda flow, records: seen.extend(records))
    readers = [False]
    log.size_readers.append(lambda: readers[0])
    for streamed in (True, False):
        flow, ctx = governed_flow(snap, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        upstream_response, flow.response = flow.response, None
        log.requestheaders(flow)
        flow.response = upstream_response
        flow.response.stream = True
        log.responseheaders(flow)
        assert (flow.response.stream is True) is streamed
        readers[0] = True  # a Kong log sink appeared: the next stream is counted
    log.response(flow)
    assert len(seen) == 1 and seen[0]["decision"] == "allow"


def test_audit_option_errors(tmp_path):
    log = AuditLog(PolicyStore())
    with taddons.context(log) as tctx:
        with pytest.raises(Exception, match="does not exist"):
            tctx.configure(log, mcp_audit=str(tmp_path / "missing" / "audit.jsonl"))
        with pytest.raises(Exception, match="is a directory"):
            tctx.configure(log, mcp_audit=str(tmp_path))
        (tmp_path / "foreign.log").write_text("hello\n")
        with pytest.raises(Exception, match="holds no audit record"):
            tctx.configure(log, mcp_audit=str(tmp_path / "foreign.log"))
        with pytest.raises(SystemExit):  # asked for at start-up and not available: mitmdump stops
            log.running()
        assert (tmp_path / "foreign.log").read_text() == "hello\n"
