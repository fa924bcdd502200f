"""`mcp-gateway pin` end to end: approve the demo route's catalog, see a rug pull refused by the
CLI and by a gateway in lock mode, approve the change with --update (the diff names the field),
and the gateway follows the updated lock file without a restart."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from mcp import McpError

from mcpgw.integrity.digest import tool_digest
from scripts.demo_github_tools import TOOL_NAMES
from tests.support.gateway import DemoUpstream, Gateway, mcp_session

pytestmark = pytest.mark.e2e

CLI = Path(__file__).resolve().parents[1] / "scripts" / "mcp-gateway"
CALL_TIMEOUT = timedelta(seconds=15)


def pin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), "pin", *args], capture_output=True, text=True, timeout=60)


def policy(up: DemoUpstream) -> dict:
    return {"services": {"gh": {"url": up.url}},
            "routes": {"github": {"service": "gh", "paths": ["/github"], "integrity": {"pin": "enforce"}}}}


async def listed(gateway: Gateway) -> list[str]:
    async with mcp_session(gateway.url("/github")) as s:
        return [t.name for t in (await s.list_tools()).tools]


async def test_pin_then_update_through_a_rug_pull(tmp_path):
    up = DemoUpstream(tmp_path, "--rug-pull", "--json-response")
    try:
        policy_file = tmp_path / "policy.yaml"
        policy_file.write_text(yaml.safe_dump(policy(up)))
        lock = tmp_path / "policy.pins.json"

        first = pin(str(policy_file), "github")
        assert first.returncode == 0, first.stderr
        assert f"github: {len(TOOL_NAMES)} tool(s) pinned" in first.stdout
        pinned = json.loads(lock.read_text())["routes"]["github"]["tools"]
        assert sorted(pinned) == sorted(TOOL_NAMES)
        original = pinned["search_code"]["definition"]
        assert pinned["search_code"]["digest"] == tool_digest(original)  # round trip: the definition gives the pin

        again = pin(str(policy_file), "github")  # the upstream has pulled the rug since
        assert again.returncode == 1
        assert "~ changed: search_code (description)" in again.stdout and "<IMPORTANT>" in again.stdout
        assert "--update" in again.stderr
        assert json.loads(lock.read_text())["routes"]["github"]["tools"] == pinned  # nothing written

        gw = Gateway(tmp_path, policy_file, intercept=False)
        try:
            names = await listed(gw)
            assert names == [n for n in TOOL_NAMES if n != "search_code"]
            async with mcp_session(gw.url("/github")) as s:
                with pytest.raises(McpError) as refused:
                    await s.call_tool("search_code", {"query": "x"}, read_timeout_seconds=CALL_TIMEOUT)
                assert "changed since it was approved (description changed)" in refused.value.error.message

            updated = pin(str(policy_file), "github", "--update")
            assert updated.returncode == 0, updated.stderr
            assert "~ changed: search_code (description)" in updated.stdout
            assert any(line.strip().startswith("+") and "id_rsa" in line for line in updated.stdout.splitlines())
            new = json.loads(lock.read_text())["routes"]["github"]["tools"]["search_code"]
            assert new["digest"] != pinned["search_code"]["digest"] and "id_rsa" in new["definition"]["description"]
            assert pin(str(policy_file), "github").returncode == 0  # up to date now

            deadline = time.monotonic() + 10  # the gateway rereads a changed lock file within a second
            while "search_code" not in (names := await listed(gw)) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert names == TOOL_NAMES
        finally:
            gw.stop()
    finally:
        up.stop()


def test_pin_uses_the_given_credential_and_never_prints_it(tmp_path):
    up = DemoUpstream(tmp_path, "--require-bearer", "--json-response")
    try:
        policy_file = tmp_path / "policy.yaml"
        policy_file.write_text(yaml.safe_dump(policy(up)))
        refused = pin(str(policy_file), "github")
        assert refused.returncode == 2 and "HTTP 401" in refused.stderr
        done = pin(str(policy_file), "github", "--header", "Authorization: Bearer sekrit-token-123")
        assert done.returncode == 0, done.stderr
        assert "sekrit" not in done.stdout + done.stderr
        assert "sekrit" not in (tmp_path / "policy.pins.json").read_text()
    finally:
        up.stop()


def test_pin_unknown_route(tmp_path):
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump({"services": {"gh": {"url": "http://127.0.0.1:9/mcp"}},
                                           "routes": {"github": {"service": "gh", "paths": ["/github"]}}}))
    done = pin(str(policy_file), "nope")
    assert done.returncode == 2 and "no route 'nope'" in done.stderr
    down = pin(str(policy_file), "github")
    assert down.returncode == 2 and "could not fetch" in down.stderr


def explain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), "explain", *args], capture_output=True, text=True, timeout=60)


def test_explain_says_what_integrity_would_do(tmp_path):
    up = DemoUpstream(tmp_path, "--rug-pull", "--json-response")
    try:
        policy_file = tmp_path / "policy.yaml"
        scanned = policy(up)
        scanned["routes"]["github"]["integrity"]["scan"] = {}
        scanned["consumers"] = {"dev": {}}
        policy_file.write_text(yaml.safe_dump(scanned))
        assert pin(str(policy_file), "github").returncode == 0  # the upstream's first list, approved
        digest = json.loads((tmp_path / "policy.pins.json").read_text())["routes"]["github"]["tools"]["search_code"]["digest"]

        offline = explain(str(policy_file), "dev", "search_code")
        assert offline.returncode == 0, offline.stdout + offline.stderr
        assert (f"route github: integrity of search_code: pin (enforce): approved as {digest[:12]} in the lock file "
                "policy.pins.json; a listed definition with another digest is withheld") in offline.stdout
        unpinned = explain(str(policy_file), "dev", "never_listed")
        assert unpinned.returncode == 1 and "pin (enforce): DENIED, no pin in the lock file" in unpinned.stdout

        live = explain(str(policy_file), "dev", "search_code", "--live")  # the upstream has pulled the rug since
        assert live.returncode == 1, live.stdout + live.stderr
        assert "pin (enforce): DENIED, listed now with description changed since it was approved" in live.stdout
        assert "scan: DENIED, its definition looks poisoned (hidden.instruction-tag:high" in live.stdout
        other = explain(str(policy_file), "dev", "search_repositories", "--live")
        assert other.returncode == 0 and "listed now as approved" in other.stdout and "no finding" in other.stdout
    finally:
        up.stop()
