"""The official TypeScript SDK client (`@modelcontextprotocol/sdk`, pinned in tests/ts/) through the
demo, used exactly as the demo banner shows: its TypeScript lines pasted into a program
(tests/ts/banner_client.mjs). The project's first client that is not Python: it must list the six
tools the recipe allows a developer, every tool for an admin, get the gateway's refusal text for a
denied call, be told what is missing without a token, and work with a trailing slash too.

The SDK is installed with `npm ci` from the committed lock file into .cache/ts-client-<lock hash>/
(once; later runs reuse it). Skipped, saying so, only when node or npm is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.demo import Demo
from tests.support.gateway import ROOT, mcp_session
from tests.support.npm import installed

pytestmark = pytest.mark.e2e

TS = ROOT / "tests" / "ts"
PUSH_ARGS = {"owner": "octocat", "repo": "hello-world", "branch": "main", "message": "m",
             "files": [{"path": "README.md", "content": "hi"}]}


def install_sdk() -> Path:
    """The folder holding node_modules for the committed lock file; installed on first use."""
    return installed(TS, "ts-client", "@modelcontextprotocol/sdk/package.json")


@pytest.fixture(scope="module")
def sdk() -> Path:
    return install_sdk()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = Demo(tmp_path_factory.mktemp("ts-demo"))
    yield d
    d.stop()


def run_banner_snippet(sdk: Path, lines: list[str], **env: str) -> dict:
    """The banner's TypeScript lines in tests/ts/banner_client.mjs, run with node."""
    template = (TS / "banner_client.mjs").read_text()
    program = template.replace("  // BANNER\n", "".join(f"  {line}\n" for line in lines))
    assert program != template
    path = sdk / f"run-{uuid.uuid4().hex[:8]}.mjs"  # beside node_modules, where node resolves the SDK from
    path.write_text(program)
    try:
        done = subprocess.run(["node", str(path)], capture_output=True, text=True, timeout=120,
                              env={**os.environ, **env})
    finally:
        path.unlink()
    assert done.returncode == 0, (done.stdout, done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def snippet(demo) -> list[str]:
    lines = demo.snippet("TypeScript")
    text = "\n".join(lines)
    assert demo.url in text and '"apikey": "dev-api-key"' in text and '"Authorization": "Bearer ' in text
    return lines


def test_a_developer_sees_the_recipes_six_tools_and_is_refused_push_files(sdk, snippet):
    out = run_banner_snippet(sdk, snippet, CALL_TOOL="push_files", CALL_ARGS=json.dumps(PUSH_ARGS))
    assert "error" not in out, out
    assert out["server"] == "github-mcp-server"
    assert sorted(out["tools"]) == sorted(["search_repositories", "get_file_contents", "list_issues",
                                           "list_pull_requests", "search_users", "search_code"])
    assert out["call"]["refused"] is True and out["call"]["code"] == -32602
    assert "Tool 'push_files' is not available for consumer group 'developer'" in out["call"]["message"]


async def test_an_admin_sees_every_tool(sdk, snippet, demo):
    async with mcp_session(demo.upstream_url) as direct:  # straight to the upstream: what "every tool" is
        every = sorted(t.name for t in (await direct.list_tools()).tools)
    admin = [line.replace('"apikey": "dev-api-key"', '"apikey": "admin-api-key"') for line in snippet]
    out = run_banner_snippet(sdk, admin, CALL_TOOL="push_files", CALL_ARGS=json.dumps(PUSH_ARGS))
    assert sorted(out["tools"]) == every and len(every) > 100
    assert out["call"] == {"isError": False, "text": out["call"]["text"]} and '"ref"' in out["call"]["text"]


def test_without_a_token_the_client_shows_what_is_missing(sdk, snippet):
    key_only = [line.replace(', "Authorization": "Bearer demo-user-token"', "") for line in snippet]
    assert key_only != snippet
    out = run_banner_snippet(sdk, key_only)
    assert "Missing Authorization header" in out["error"] and "OAuth access token" in out["error"], out


def test_a_trailing_slash_works_like_the_plain_url(sdk, snippet, demo):
    slashed = [line.replace(f'"{demo.url}"', f'"{demo.url}/"') for line in snippet]
    assert slashed != snippet
    out = run_banner_snippet(sdk, slashed)
    assert "error" not in out, out
    assert len(out["tools"]) == 6
