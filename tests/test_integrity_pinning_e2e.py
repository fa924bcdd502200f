"""Tool pinning end to end (docs/integrity.md): a real mitmdump with the gateway, demo upstreams
started with --rug-pull (search_code's description changes after the first tools/list), the
official MCP client over Streamable HTTP with JSON answers, with SSE answers, and over the legacy
HTTP+SSE transport; shadow mode; trust-on-first-use pins surviving a gateway restart."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from mcp import McpError

from scripts.demo_github_tools import TOOL_NAMES
from tests.support.gateway import DemoUpstream, Gateway, mcp_session

pytestmark = pytest.mark.e2e

CALL_TIMEOUT = timedelta(seconds=15)
ARGS = {"query": "repo:kong/kong plugin"}
ROUTES = {  # route -> (upstream args, client path, legacy, integrity settings)
    "pin-json": (["--json-response"], "/pin-json", False, {"pin": "enforce", "pins": "tofu", "pin_store": "pins.json"}),
    "pin-sse": ([], "/pin-sse", False, {"pin": "enforce", "pins": "tofu"}),
    "pin-legacy": ([], "/pin-legacy/sse", True, {"pin": "enforce", "pins": "tofu"}),
    "pin-shadow": (["--json-response"], "/pin-shadow", False, {"pin": "shadow", "pins": "tofu"}),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("integrity")


@pytest.fixture(scope="module")
def upstreams(workdir):
    started = {}
    try:
        for route, (args, *_rest) in ROUTES.items():
            started[route] = DemoUpstream(workdir, "--rug-pull", *args, name=f"up-{route}")
        yield started
    finally:
        for up in started.values():
            up.stop()


def policy(upstreams) -> dict:
    services, routes = {}, {}
    for route, (_, path, legacy, integrity) in ROUTES.items():
        up = upstreams[route]
        services[route] = {"url": up.base if legacy else up.url}
        routes[route] = {"service": route, "paths": ["/" + path.split("/")[1]], "integrity": integrity}
    return {"services": services, "routes": routes}


def start_gateway(workdir, upstreams, name: str) -> Gateway:
    return Gateway(workdir, policy(upstreams), name=name,
                   extra=["--set", f"mcp_audit={workdir / (name + '-audit.jsonl')}"])


@pytest.fixture(scope="module")
def gateway(workdir, upstreams):
    gw = start_gateway(workdir, upstreams, "gateway")
    yield gw
    gw.stop()


def session(gateway: Gateway, route: str):
    _, path, legacy, _ = ROUTES[route]
    return mcp_session(gateway.url(path), legacy=legacy)


def audit_findings(path, route: str, actions: set[str], timeout: float = 10.0) -> list[dict]:
    """A route's findings in the audit file, once one of each action is there (records are
    written by a background thread, a GET stream's when the stream ends: waited for)."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        if path.exists():
            for line in path.read_text().splitlines():
                record = json.loads(line)
                found += [{**f, "decision": record.get("decision")}
                          for f in record.get("findings", []) if record["route"] == route]
        if actions <= {f["action"] for f in found} or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@pytest.mark.parametrize("route", ["pin-json", "pin-sse", "pin-legacy"])
async def test_rug_pull_is_withheld_and_its_calls_refused(gateway, workdir, route):
    async with session(gateway, route) as s:
        first = [t.name for t in (await s.list_tools()).tools]
        assert first == TOOL_NAMES  # first use: every tool pinned as it is
        result = await s.call_tool("search_code", ARGS, read_timeout_seconds=CALL_TIMEOUT)
        assert not result.isError
        second = [t.name for t in (await s.list_tools()).tools]
        assert second == [n for n in TOOL_NAMES if n != "search_code"]  # changed since approval: withheld
        with pytest.raises(McpError) as refused:
            await s.call_tool("search_code", ARGS, read_timeout_seconds=CALL_TIMEOUT)
        assert refused.value.error.code == -32602
        assert refused.value.error.message == ("Tool 'search_code' is withheld by the gateway: it changed since it "
                                               "was approved (description changed)")
        # the other tools are untouched
        assert not (await s.call_tool("search_repositories", ARGS, read_timeout_seconds=CALL_TIMEOUT)).isError
    findings = audit_findings(workdir / "gateway-audit.jsonl", route, {"withheld", "refused"})
    withheld = [f for f in findings if f["action"] == "withheld"]
    assert withheld and withheld[0]["tool"] == "search_code" and withheld[0]["changed_fields"] == ["description"]
    assert withheld[0]["pinned_digest"] != withheld[0]["digest"]
    refusals = [f for f in findings if f["action"] == "refused"]
    assert refusals and refusals[0]["decision"] == "deny"


async def test_shadow_mode_lists_and_forwards_but_records(gateway, workdir, upstreams):
    async with session(gateway, "pin-shadow") as s:
        await s.list_tools()
        assert [t.name for t in (await s.list_tools()).tools] == TOOL_NAMES
        upstreams["pin-shadow"].reset()
        assert not (await s.call_tool("search_code", ARGS, read_timeout_seconds=CALL_TIMEOUT)).isError
    assert "search_code" in upstreams["pin-shadow"].tool_calls()
    findings = audit_findings(workdir / "gateway-audit.jsonl", "pin-shadow", {"would_withhold", "would_refuse"})
    assert {f["action"] for f in findings} == {"would_withhold", "would_refuse"}
    assert all(f["tool"] == "search_code" for f in findings)


async def test_notifications_pass_and_unchanged_tools_stay(gateway):
    """A tool the upstream did not change is never withheld, however often it is listed."""
    async with session(gateway, "pin-sse") as s:
        for _ in range(3):
            names = [t.name for t in (await s.list_tools()).tools]
            assert "search_repositories" in names and "search_code" not in names


async def test_tofu_pins_survive_a_restart(workdir, upstreams, gateway):
    """pin-json keeps its pins in a file: a new gateway process still holds search_code to the
    definition pinned by the first one, instead of trusting the changed one on 'first use'."""
    async with session(gateway, "pin-json") as s:
        await s.list_tools()  # pinned (by the earlier test, or now)
    pins = json.loads((workdir / "pins.json").read_text())
    assert "search_code" in pins["routes"]["pin-json"]
    second = start_gateway(workdir, upstreams, "gateway-restarted")
    try:
        async with session(second, "pin-json") as s:
            names = [t.name for t in (await s.list_tools()).tools]
            assert "search_code" not in names and len(names) == len(TOOL_NAMES) - 1
            with pytest.raises(McpError):
                await s.call_tool("search_code", ARGS, read_timeout_seconds=CALL_TIMEOUT)
    finally:
        second.stop()


async def test_intercept_mode_holds_the_same_pins(gateway, upstreams):
    """An agent using the gateway as its HTTPS_PROXY, talking to the upstream's own URL."""
    async with mcp_session(upstreams["pin-sse"].url, gateway=gateway, intercept=True) as s:
        await s.list_tools()  # the upstream's first list, if no earlier test made it: pinned
        names = [t.name for t in (await s.list_tools()).tools]
        assert "search_code" not in names and "search_repositories" in names
        with pytest.raises(McpError):
            await s.call_tool("search_code", ARGS, read_timeout_seconds=CALL_TIMEOUT)
