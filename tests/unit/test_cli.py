"""The command line: check, explain and verify, their output and exit status."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from mitmproxy.test import taddons

from mcpgw import cli
from mcpgw.auditchain import ChainHead, seal
from mcpgw.governance import explain as governance_explain
from mcpgw.identity.consumers import consumer_index
from mcpgw.mitm_ui import MCPConsole
from mcpgw.policy.loader import load_policy_file
from mcpgw.policy.store import PolicyStore
from tests.support.gateway import ROOT

POLICY = {
    "consumer_groups": ["admin", "developer"],
    "consumers": {"admin-user": {"groups": ["admin"], "keys": ["admin-api-key"]},
                  "dev-user": {"groups": ["developer"], "keys": ["dev-api-key"]}},
    "services": {"github": {"url": "https://api.githubcopilot.com/mcp"}},
    "routes": {"github-mcp": {"service": "github", "paths": ["/github-mcp"], "key_auth": {},
                              "acl": {"include_consumer_groups": True,
                                      "default_acl": [{"scope": "tools", "deny": ["developer"]}],
                                      "tools": [{"name": "search_code", "acl": {"allow": ["admin", "developer"]}},
                                                {"name": "push_files", "acl": {"allow": ["admin"]}}]}}},
}


@pytest.fixture
def policy_file(tmp_path):
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump(POLICY, sort_keys=False))
    return p


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_check_valid_policy_prints_a_summary(capsys, policy_file):
    status, out, _ = run(capsys, "check", policy_file)
    _, digest, _ = load_policy_file(policy_file)
    assert status == 0 and f"sha256 {digest}" in out and out.rstrip().endswith(f"{policy_file}: valid")
    assert "tools[push_files]: allow [admin]" in out and "dev-api-key" not in out
    assert run(capsys, "check", "--quiet", policy_file) == (0, "", "")


def test_check_prints_every_problem_with_its_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  gh: {url: ftp://x}\nroutes:\n  r:\n    service: gh\n    paths: [/a]\n    tpyo: 1\n")
    status, out, err = run(capsys, "check", bad)
    assert status == 1 and out == ""
    lines = err.splitlines()
    assert lines[-1] == f"{bad}: invalid (2 problems)"
    assert any("services.gh.url (line 2)" in ln for ln in lines)
    assert any("routes.r.tpyo (line 7): unknown field" in ln for ln in lines)


def test_check_missing_file(capsys, tmp_path):
    status, _, err = run(capsys, "check", tmp_path / "nope.yaml")
    assert status == 1 and "not found" in err


def test_explain_gives_the_gateways_decision_and_exit_status(capsys, policy_file):
    policy = load_policy_file(policy_file)[0]
    for consumer, tool in [("dev-user", "push_files"), ("dev-user", "search_code"), ("dev-user", "create_issue"),
                           ("admin-user", "push_files"), ("admin-user", "anything")]:
        status, out, _ = run(capsys, "explain", policy_file, consumer, tool)
        decision = governance_explain(policy, "github-mcp", consumer_index(policy).identity(consumer, "explain"),
                                      "tool", tool)
        assert status == (0 if decision.allowed else 1)
        assert out.strip().endswith(f"-> {'ALLOWED' if decision.allowed else 'DENIED'} by {decision.rule}")


def test_explain_says_what_the_mitmproxy_command_says(capsys, policy_file):
    store = PolicyStore()
    store.load(policy_file)
    console = MCPConsole(store)
    with taddons.context(console) as tctx:
        for consumer, tool in [("dev-user", "push_files"), ("admin-user", "create_issue"), ("group:developer", "x")]:
            _, out, _ = run(capsys, "explain", policy_file, consumer, tool)
            assert out.strip() == tctx.command(console.explain, consumer, tool)


def test_explain_unknown_consumer_or_route(capsys, policy_file):
    status, _, err = run(capsys, "explain", policy_file, "nobody", "push_files")
    assert status == 2 and "unknown consumer 'nobody'" in err
    status, _, err = run(capsys, "explain", policy_file, "dev-user", "push_files", "--route", "nope")
    assert status == 2 and "unknown route 'nope'" in err


def test_verify(capsys, tmp_path):
    f = tmp_path / "audit.jsonl"
    head, lines = ChainHead(), []
    for i in range(4):
        line, head = seal({"i": i}, head)
        lines.append(line)
    f.write_bytes(b"".join(lines))
    status, out, _ = run(capsys, "verify", f)
    assert status == 0 and f"intact, 4 record(s), seq 1 to 4, last hash {head.hash}" in out
    f.write_bytes(b"".join(lines[:2] + lines[3:]))
    status, _, err = run(capsys, "verify", f)
    assert status == 1 and err.startswith(f"{f}:3: record seq 4 follows seq 2: seq 3 missing")
    status, _, err = run(capsys, "verify", tmp_path / "missing.jsonl")
    assert status == 2 and "No such file" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["explain", "only-a-policy"])
    assert exc.value.code == 2


def test_wrapper_script_runs_the_cli(policy_file):
    done = subprocess.run([str(ROOT / "scripts" / "mcp-gateway"), "explain", str(policy_file), "dev-user", "push_files"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "-> DENIED by acl.tools[push_files].allow" in done.stdout
