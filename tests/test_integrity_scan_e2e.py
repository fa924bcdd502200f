"""Description scanning end to end: through a real mitmdump, the demo's benign catalog passes
whole and unflagged; once the upstream poisons search_code's description, the tool is withheld
(its findings in the audit record) and its call refused; `mcp-gateway scan` reports the same for
the live route."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from mcp import McpError

from scripts.demo_github_tools import TOOL_NAMES
from tests.support.gateway import DemoUpstream, Gateway, mcp_session

pytestmark = pytest.mark.e2e

CLI = Path(__file__).resolve().parents[1] / "scripts" / "mcp-gateway"
CALL_TIMEOUT = timedelta(seconds=15)


def scan_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), "scan", *args], capture_output=True, text=True, timeout=60)


def findings(path: Path, want: str, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = [f for line in (path.read_text().splitlines() if path.exists() else [])
                 for f in json.loads(line).get("findings", [])]
        if any(f["action"] == want for f in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


async def test_benign_catalog_passes_and_a_poisoned_description_is_withheld(tmp_path):
    up = DemoUpstream(tmp_path, "--rug-pull")
    audit = tmp_path / "audit.jsonl"
    policy = {"services": {"gh": {"url": up.url}},
              "routes": {"github": {"service": "gh", "paths": ["/github"], "integrity": {"scan": {}}}}}
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    gw = Gateway(tmp_path, policy_file, intercept=False, extra=["--set", f"mcp_audit={audit}"])
    try:
        async with mcp_session(gw.url("/github")) as s:
            assert [t.name for t in (await s.list_tools()).tools] == TOOL_NAMES  # 100+ benign tools: all listed
            assert [t.name for t in (await s.list_tools()).tools] == [n for n in TOOL_NAMES if n != "search_code"]
            with pytest.raises(McpError) as refused:
                await s.call_tool("search_code", {"query": "x"}, read_timeout_seconds=CALL_TIMEOUT)
            assert "looks poisoned" in refused.value.error.message
            assert "hidden.instruction-tag" in refused.value.error.message
        found = findings(audit, "withheld")
        [withheld] = [f for f in found if f["action"] == "withheld"]
        assert withheld["check"] == "integrity.scan" and withheld["tool"] == "search_code"
        rules = {f["rule"] for f in withheld["findings"]}
        assert {"hidden.instruction-tag", "exfil.sensitive-path", "hidden.conceal-from-user"} <= rules
        assert all(f["tool"] == "search_code" for f in found)  # nothing about the benign tools

        live = scan_cli(str(policy_file), "github")  # the upstream keeps the poisoned description now
        assert live.returncode == 1
        assert "search_code: hidden.instruction-tag (high) in description" in live.stdout
        assert {line.split(":")[0] for line in live.stdout.splitlines()} == {"search_code"}
    finally:
        gw.stop()
        up.stop()


def test_scan_cli_on_a_benign_live_route(tmp_path):
    up = DemoUpstream(tmp_path)
    try:
        policy_file = tmp_path / "policy.yaml"
        policy_file.write_text(yaml.safe_dump({"services": {"gh": {"url": up.url}},
                                               "routes": {"github": {"service": "gh", "paths": ["/github"]}}}))
        done = scan_cli(str(policy_file), "github")
        assert done.returncode == 0, done.stderr
        assert f"{len(TOOL_NAMES)} tool(s) scanned, 0 finding(s)" in done.stdout
    finally:
        up.stop()
