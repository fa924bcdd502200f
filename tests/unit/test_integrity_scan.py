"""Description scanning: published tool-poisoning examples are all flagged with the expected
rules; the demo's benign GitHub catalog yields nothing; rules are data (a user file adds and
replaces rules); blocked tools are withheld from lists and their calls refused, flagged ones
only recorded; shadow mode blocks nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcpgw.integrity import scanning
from mcpgw.integrity.scanning import Scanner, load_rules, skeleton
from mcpgw.policy.models import Policy
from mcpgw.policy.store import Snapshot
from mcpgw.protocol.messages import transform_json_body
from mcpgw.routing import RouteTable
from scripts.demo_github_tools import TOOLS

from .integrity_flows import flow_for

CASES = json.loads((Path(__file__).parent / "data" / "integrity_poisoned_tools.json").read_text())
DEFAULT = Scanner(load_rules())


@pytest.fixture(autouse=True)
def fresh_state():
    scanning.blocked.clear()
    yield
    scanning.blocked.clear()


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_published_poisoning_examples_are_flagged(case):
    found = DEFAULT.scan_list(case["tools"])
    got = {name: sorted({f.rule for f in findings}) for name, findings in found.items()}
    assert got == {name: sorted(rules) for name, rules in case["expect"].items()}


def test_the_demo_catalog_yields_no_finding():
    catalog = [spec.to_mcp_tool().model_dump(mode="json", exclude_none=True) for spec in TOOLS]
    assert len(catalog) >= 100
    assert {n: f for n, f in DEFAULT.scan_list(catalog).items() if f} == {}


def test_findings_say_where_and_show_invisible_characters_escaped():
    [finding] = DEFAULT.scan_tool({"name": "t", "inputSchema": {"properties": {"q": {"description": "a\u200bb"}}}})
    assert finding.where == "inputSchema.properties.q.description" and finding.excerpt == "U+200B"
    [finding] = DEFAULT.scan_tool({"name": "t", "description": "x <IMPORTANT>\u202e</IMPORTANT>"})[:1]
    assert finding.rule == "hidden.instruction-tag" and "\u202e" not in finding.excerpt


def test_skeleton_folds_confusables():
    assert skeleton("s\u0435arch_c\u043ede") == skeleton("search_code") == skeleton("Search-Code")
    assert skeleton("search_code") != skeleton("search_cod")


def test_user_rules_add_and_replace(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n"
                    "  - {id: org.no-internal-hosts, severity: critical, regex: 'internal\\.corp'}\n"
                    "  - {id: text.very-long, severity: low, max_length: 10}\n")
    scanner = Scanner(load_rules(path))
    found = {f.rule: f.severity for f in scanner.scan_tool({"name": "t", "description": "see internal.corp now"})}
    assert found == {"org.no-internal-hosts": "critical", "text.very-long": "low"}


@pytest.mark.parametrize("text, problem", [
    ("rules: [{id: x, severity: huge, regex: a}]", "severity"),
    ("rules: [{id: x, regex: '('}]", "bad regular expression"),
    ("rules: [{id: x, regex: a, chars: b}]", "exactly one"),
    ("rules: [{severity: low, regex: a}]", "needs an id"),
    ("nothing: here", "rules:"),
])
def test_bad_rule_files_are_refused(tmp_path, text, problem):
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem):
        load_rules(path)


# --- on flows -----------------------------------------------------------------------------------

def snapshot(scan: dict, tmp_path) -> Snapshot:
    policy = Policy.model_validate({"services": {"gh": {"url": "http://127.0.0.1:1/mcp"}},
                                    "routes": {"gh": {"service": "gh", "paths": ["/gh"], "integrity": {"scan": scan}}}})
    return Snapshot(policy, RouteTable(policy), "digest", 1, str(tmp_path / "policy.yaml"), ())


POISONED = CASES[0]["tools"][0]  # Invariant Labs' `add`: high severity findings
LONG = {"name": "verbose", "description": "x " * 2500}  # text.very-long: medium
LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


def listed(ctx, *tools):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": list(tools)}}).encode()
    return [t["name"] for t in json.loads(transform_json_body(body, ctx.server_transforms) or body)["result"]["tools"]]


def call(name):
    return {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": name, "arguments": {}}}


def test_block_withholds_and_refuses_flag_only_records(tmp_path):
    snap = snapshot({}, tmp_path)
    ctx, flow, _ = flow_for(snap, LIST)
    assert listed(ctx, POISONED, LONG, {"name": "fine", "description": "Fine."}) == ["verbose", "fine"]
    actions = {f["tool"]: f["action"] for f in ctx.audit_fields.get("findings", [])}
    assert actions == {"add": "withheld", "verbose": "flagged"}
    assert flow.marked == ":no_entry:" and "add WITHHELD" in flow.comment
    _, _, answer = flow_for(snap, call("add"))
    error = json.loads(answer.content)["error"]
    assert "looks poisoned" in error["message"] and "hidden.instruction-tag" in error["data"]["rules"]
    assert flow_for(snap, call("verbose"))[2] is None
    # the upstream fixes the tool: listed and callable again
    ctx, _, _ = flow_for(snap, LIST)
    assert listed(ctx, {"name": "add", "description": "Adds two numbers."}) == ["add"]
    assert flow_for(snap, call("add"))[2] is None


def test_actions_per_severity_and_shadow(tmp_path):
    hidden = CASES[3]["tools"][0]  # zero-width characters: high only
    ctx, _, _ = flow_for(snapshot({"actions": {"high": "flag", "medium": "block"}}, tmp_path), LIST)
    assert listed(ctx, hidden, LONG) == ["get_weather"]
    ctx, _, _ = flow_for(snapshot({"actions": {"high": "flag"}}, tmp_path), LIST)  # medium left out: flags
    assert listed(ctx, hidden, LONG) == ["get_weather", "verbose"]
    ctx, flow, _ = flow_for(snapshot({"mode": "shadow"}, tmp_path), LIST)
    assert listed(ctx, POISONED, LONG) == ["add", "verbose"]
    assert {f["tool"]: f["action"] for f in ctx.audit_fields.get("findings", [])} == {"add": "would_withhold", "verbose": "flagged"}
    assert flow.marked == ":warning:"
    assert flow_for(snapshot({"mode": "shadow"}, tmp_path), call("add"))[2] is None


def test_a_broken_rules_file_fails_closed(tmp_path):
    (tmp_path / "rules.yaml").write_text("rules: [{id: x, regex: '('}]")
    with pytest.raises(ValueError):
        flow_for(snapshot({"rules_file": "rules.yaml"}, tmp_path), LIST)  # the hook answers 500, nothing forwarded
