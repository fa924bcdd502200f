"""Audit log, metrics and the explain CLI end to end: Kong's "Secure External MCP Gateway" recipe
(GitHub MCP behind key-auth and tool ACLs) run through a real mitmdump against the demo upstream
with the official MCP client, then the audit file, a scrape of the metrics endpoint and the CLI
are checked against what the client actually sent and what the gateway actually did."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter

import httpx
import pytest
from mcp.shared.exceptions import McpError
from prometheus_client.parser import text_string_to_metric_families

from mcpgw import cli
from mcpgw.auditchain import verify
from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, jsonrpc, mcp_session

pytestmark = pytest.mark.e2e

KEYS = {"admin-user": "admin-api-key-7f3a", "dev-user": "dev-api-key-91c2"}
GITHUB_TOKEN = "ghu_passthroughTokenForGitHub0123456789"  # the recipe's Bearer token, passed through
READ = ["search_repositories", "get_file_contents", "list_issues", "list_pull_requests", "search_users", "search_code"]
WRITE = ["create_issue", "push_files", "create_pull_request", "merge_pull_request", "create_repository"]
PUSH_ARGS = {"owner": "o", "repo": "r", "branch": "main", "files": [], "message": "m"}


def recipe_policy(upstream: DemoUpstream) -> dict:
    acl = {"consumer_identifier": "username", "include_consumer_groups": True,
           "default_acl": [{"scope": "tools", "deny": ["developer"]}],
           "tools": [{"name": t, "acl": {"allow": ["admin", "developer"]}} for t in READ] +
                    [{"name": t, "acl": {"allow": ["admin"]}} for t in WRITE]}
    return {
        "consumer_groups": ["admin", "developer"],
        "consumers": {"admin-user": {"groups": ["admin"], "keys": [KEYS["admin-user"]]},
                      "dev-user": {"groups": ["developer"], "keys": [KEYS["dev-user"]]}},
        "services": {"github": {"url": upstream.url}},
        "routes": {
            "github-mcp": {"service": "github", "paths": ["/github-mcp"], "key_auth": {"hide_credentials": True},
                           "acl": acl, "audit": {"log_payloads": True}},
            "github-shadow": {"service": "github", "paths": ["/github-shadow"], "key_auth": {"hide_credentials": True},
                              "acl": {**acl, "shadow": True}},
        },
    }


class Sent(httpx.Auth):
    """Notes every request the client sends (an httpx auth hook sees each one, body included)."""

    requires_request_body = True

    def __init__(self, route: str, log: list, *, refused_unread: bool = False):
        self.route, self.log, self.refused_unread = route, log, refused_unread

    def auth_flow(self, request: httpx.Request):
        self.log.append((self.route, request.method, None if self.refused_unread else request.content))
        yield request


def expected_records(sent: list) -> Counter:
    """One record per JSON-RPC message POSTed, one per request carrying none or refused before
    its body was read."""
    out: Counter = Counter()
    for route, method, body in sent:
        if method == "POST" and body:
            doc = json.loads(body)
            for msg in doc if isinstance(doc, list) else [doc]:
                out[(route, msg.get("method"), msg.get("id"))] += 1
        else:
            out[(route, method, None)] += 1
    return out


async def scenario(gw: Gateway, sent: list) -> dict:
    seen = {}
    bearer = {"Authorization": f"Bearer {GITHUB_TOKEN}"}
    async with mcp_session(gw.url("/github-mcp"), headers={"apikey": KEYS["dev-user"], **bearer},
                           auth=Sent("github-mcp", sent)) as dev:
        seen["dev_tools"] = sorted(t.name for t in (await dev.list_tools()).tools)
        assert not (await dev.call_tool("search_repositories", {"query": f"kong {GITHUB_TOKEN}"})).isError
        with pytest.raises(McpError, match="Tool 'push_files' is not available for consumer group 'developer'"):
            await dev.call_tool("push_files", PUSH_ARGS)
    async with mcp_session(gw.url("/github-mcp"), headers={"apikey": KEYS["admin-user"], **bearer},
                           auth=Sent("github-mcp", sent)) as admin:
        seen["admin_tools"] = len((await admin.list_tools()).tools)
        assert not (await admin.call_tool("push_files", PUSH_ARGS)).isError
    async with mcp_session(gw.url("/github-shadow"), headers={"apikey": KEYS["dev-user"]},
                           auth=Sent("github-shadow", sent)) as shadowed:
        seen["shadow_tools"] = len((await shadowed.list_tools()).tools)
        assert not (await shadowed.call_tool("push_files", PUSH_ARGS)).isError  # forwarded: shadow mode
    async with httpx.AsyncClient(timeout=30, auth=Sent("github-mcp", sent, refused_unread=True)) as client:
        for headers in ({"apikey": "not-a-key-at-all"}, {}):
            r = await client.post(gw.url("/github-mcp"), headers={**MCP_HEADERS, **headers}, json=jsonrpc("tools/list"))
            assert r.status_code == 401
    return seen


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("observability")
    upstream = DemoUpstream(workdir)
    audit_file = workdir / "audit.jsonl"
    gw = Gateway(workdir, recipe_policy(upstream), intercept=False,
                 extra=["--set", f"mcp_audit={audit_file}", "--set", "mcp_metrics=127.0.0.1:0"])
    sent: list = []
    try:
        gw.process.wait_for(r"metrics listening at")
        port = re.search(r"metrics listening at http://127\.0\.0\.1:(\d+)/metrics", gw.log()).group(1)
        seen = asyncio.run(scenario(gw, sent))
        upstream_calls = upstream.tool_calls()
        expected = f"mcp_gateway_audit_records_total {float(sum(expected_records(sent).values()))}"
        for _ in range(50):  # a flow is counted when it ends, and a session's GET stream ends last
            scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            if expected in scraped:
                break
            time.sleep(0.1)
    finally:
        gw.stop()  # a clean shutdown: everything queued must reach the file
        upstream.stop()
    records = [json.loads(line) for line in audit_file.read_text().splitlines()]
    return {"workdir": workdir, "audit": audit_file, "records": records, "sent": sent, "seen": seen,
            "metrics": scraped, "upstream_calls": upstream_calls, "log": gw.log(), "policy": gw.policy_path}


def calls(records: list, route: str | None = None) -> list[tuple]:
    return [(r["route"], r["consumer"]["name"], r["name"], r["decision"], r["rule"]) for r in records
            if r.get("jsonrpc") and r["jsonrpc"]["method"] == "tools/call" and route in (None, r["route"])]


def test_the_gateway_enforced_the_recipe(run):
    assert run["seen"]["dev_tools"] == sorted(READ)
    assert run["seen"]["admin_tools"] > 100 and run["seen"]["shadow_tools"] == run["seen"]["admin_tools"]
    assert run["upstream_calls"] == ["search_repositories", "push_files", "push_files"]  # admin's, then shadow's


def test_one_record_per_governed_message(run):
    got = Counter()
    for r in run["records"]:
        rpc = r.get("jsonrpc")
        got[(r["route"], rpc["method"] if rpc else r["http"]["method"], rpc["id"] if rpc else None)] += 1
    assert got == expected_records(run["sent"])


def test_records_say_who_did_what_and_what_was_decided(run):
    records = run["records"]
    assert calls(records) == [
        ("github-mcp", "dev-user", "search_repositories", "allow", "acl.tools[search_repositories].allow"),
        ("github-mcp", "dev-user", "push_files", "deny", "acl.tools[push_files].allow"),
        ("github-mcp", "admin-user", "push_files", "allow", "acl.tools[push_files].allow"),
        ("github-shadow", "dev-user", "push_files", "would_deny", "acl.tools[push_files].allow"),
    ]
    denied = next(r for r in records if r["decision"] == "deny" and r.get("name") == "push_files")
    assert denied["http"]["upstream_status"] is None and denied["consumer"]["groups"] == ["developer"]
    assert denied["consumer"]["method"] == "key-auth" and denied["session"]
    shadowed = next(r for r in records if r["decision"] == "would_deny")
    assert shadowed["http"]["upstream_status"] == 200
    refused = [r for r in records if r["http"]["status"] == 401]
    assert len(refused) == 2 and all(r["decision"] == "deny" and r["consumer"] is None for r in refused)
    assert {r["reason"] for r in refused} == {"Unauthorized", "No API key found in request"}
    assert all(r["rule"].startswith("identity.keyauth") for r in refused)
    for r in records:
        assert r["mode"] == "gateway" and r["duration_ms"] >= 0 and r["request_bytes"] >= 0


def test_payloads_show_the_filtered_list_and_hold_no_secrets(run):
    dev_list = next(r for r in run["records"] if r.get("jsonrpc", {}) and r["jsonrpc"]["method"] == "tools/list"
                    and r["consumer"]["name"] == "dev-user")
    assert sorted(t["name"] for t in dev_list["payload"]["response"]["result"]["tools"]) == sorted(READ)
    search = next(r for r in run["records"] if r.get("name") == "search_repositories")
    assert search["payload"]["request"]["params"]["arguments"]["query"] == "kong [redacted]"
    text = run["audit"].read_text()
    for secret in (*KEYS.values(), GITHUB_TOKEN, "not-a-key-at-all"):
        assert secret not in text
    assert not any("payload" in r for r in run["records"] if r["route"] == "github-shadow")


def test_chain_is_intact_and_the_verifier_points_at_tampering(run, capsys):
    result = verify([run["audit"]])
    assert result.ok and result.records == len(run["records"])
    assert f"closed at seq {result.head.seq}, hash {result.head.hash}" in run["log"]
    lines = run["audit"].read_bytes().splitlines(keepends=True)
    deleted = run["workdir"] / "deleted.jsonl"
    deleted.write_bytes(b"".join(lines[:6] + lines[7:]))
    assert cli.main(["verify", str(deleted)]) == 1
    assert capsys.readouterr().err.startswith(f"{deleted}:7: record seq 8 follows seq 6: seq 7 missing")
    edited = run["workdir"] / "edited.jsonl"
    index = next(i for i, line in enumerate(lines) if b'"decision":"deny"' in line)
    lines[index] = lines[index].replace(b'"decision":"deny"', b'"decision":"allow"')  # hide a denial
    edited.write_bytes(b"".join(lines))
    assert cli.main(["verify", str(edited)]) == 1
    assert capsys.readouterr().err.startswith(f"{edited}:{index + 1}: content does not match its hash")


def test_metrics_show_the_scenarios_counts(run):
    decisions = Counter()
    for family in text_string_to_metric_families(run["metrics"]):
        for s in family.samples:
            if s.name == "mcp_gateway_decisions_total" and s.value:
                labels = s.labels
                decisions[(labels["route"], labels["method"], labels["tool"], labels["consumer_group"],
                           labels["decision"])] += int(s.value)
    from_audit = Counter()
    for r in run["records"]:
        rpc = r.get("jsonrpc")
        group = r["consumer"]["groups"][0] if r["consumer"] else "none"
        tool = r["name"] if r.get("primitive") == "tool" and r["name"] else "none"
        from_audit[(r["route"], rpc["method"] if rpc else "none", tool, group, r["decision"])] += 1
    assert decisions == from_audit
    assert decisions[("github-mcp", "tools/call", "push_files", "developer", "deny")] == 1
    assert decisions[("github-shadow", "tools/call", "push_files", "developer", "would_deny")] == 1
    assert decisions[("github-mcp", "none", "none", "none", "deny")] == 2  # the bad keys
    assert 'mcp_gateway_policy_reloads_total{result="ok"} 1.0' in run["metrics"]


def test_cli_explain_agrees_with_what_the_gateway_did(run, capsys):
    verdicts = {"allow": ("ALLOWED", 0), "deny": ("DENIED", 1), "would_deny": ("WOULD_DENY", 1)}
    for route, consumer, tool, decision, rule in calls(run["records"]):
        status = cli.main(["explain", str(run["policy"]), consumer, tool, "--route", route])
        out = capsys.readouterr().out
        word, code = verdicts[decision]
        assert status == code and f"-> {word} by {rule}" in out, out
