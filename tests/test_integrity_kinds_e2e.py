"""Prompts and resources pinned like tools, end to end (integrity.pin_also): the demo upstream
with --rug-pull changes its first prompt and first resource after their first lists; the
official MCP client sees them withheld and its prompts/get and resources/read refused, over JSON
and SSE answers; `mcp-gateway pin` approves them into the lock file and `--update` names them."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from mcp import McpError

from tests.support.gateway import DemoUpstream, Gateway, mcp_session

pytestmark = pytest.mark.e2e

CLI = Path(__file__).resolve().parents[1] / "scripts" / "mcp-gateway"
TIMEOUT = timedelta(seconds=15)
ALSO = {"pin": "enforce", "pins": "tofu", "pin_also": ["prompts", "resources"]}
TRIAGE_ARGS = {"owner": "kong", "repo": "kong", "issue_number": "1"}


@pytest.mark.parametrize("answers", [["--json-response"], []], ids=["json", "sse"])
async def test_changed_prompt_and_resource_are_withheld_and_refused(tmp_path, answers):
    up = DemoUpstream(tmp_path, "--rug-pull", *answers)
    gw = Gateway(tmp_path, {"services": {"gh": {"url": up.url}},
                            "routes": {"gh": {"service": "gh", "paths": ["/gh"], "integrity": ALSO}}}, intercept=False)
    try:
        async with mcp_session(gw.url("/gh")) as s:
            prompts = [p.name for p in (await s.list_prompts()).prompts]
            resources = [str(r.uri) for r in (await s.list_resources()).resources]
            assert prompts[0] == "issue_triage" and len(resources) > 1
            assert (await s.get_prompt("issue_triage", TRIAGE_ARGS)).messages  # pinned as first listed: served
            assert [p.name for p in (await s.list_prompts()).prompts] == prompts[1:]  # changed since: withheld
            assert [str(r.uri) for r in (await s.list_resources()).resources] == resources[1:]
            with pytest.raises(McpError) as refused:
                await s.get_prompt("issue_triage", TRIAGE_ARGS)
            assert refused.value.error.message == ("Prompt 'issue_triage' is withheld by the gateway: it changed "
                                                   "since it was approved (description changed)")
            with pytest.raises(McpError) as refused:
                await s.read_resource(resources[0])
            assert refused.value.error.message.startswith(f"Resource '{resources[0]}' is withheld by the gateway")
            assert (await s.read_resource(resources[1])).contents  # the others are untouched
            assert [t.name for t in (await s.list_tools()).tools]  # tools are pinned as before
    finally:
        gw.stop()
        up.stop()


def test_pin_approves_prompts_and_resources_and_update_names_them(tmp_path):
    up = DemoUpstream(tmp_path, "--rug-pull", "--json-response")
    try:
        policy_file = tmp_path / "policy.yaml"
        policy_file.write_text(yaml.safe_dump({"services": {"gh": {"url": up.url}}, "routes": {"gh": {
            "service": "gh", "paths": ["/gh"], "integrity": {"pin": "enforce", "pin_also": ["prompts", "resources"]}}}}))
        pin = lambda *a: subprocess.run([str(CLI), "pin", str(policy_file), "gh", *a],  # noqa: E731
                                        capture_output=True, text=True, timeout=60)
        first = pin()
        assert first.returncode == 0, first.stderr
        route = json.loads((tmp_path / "policy.pins.json").read_text())["routes"]["gh"]
        assert "issue_triage" in route["prompts"] and route["resources"] and route["resourceTemplates"]
        assert f"{len(route['prompts'])} prompts, {len(route['resources'])} resources" in first.stdout
        again = pin("--update")  # the upstream changed its first prompt and resource since
        assert again.returncode == 0, again.stderr
        assert "~ changed: prompt:issue_triage (description)" in again.stdout
        assert any(line.startswith("~ changed: resource:") for line in again.stdout.splitlines())
    finally:
        up.stop()
