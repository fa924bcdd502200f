"""A trust-on-first-use pin file edited while the gateway runs, end to end: the demo upstream
with --rug-pull changes search_code after its first list; the operator removes its pin from the
file to accept the change, and the running gateway pins the new definition and lists it again."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest

from scripts.demo_github_tools import TOOL_NAMES
from tests.support.gateway import DemoUpstream, Gateway, mcp_session

pytestmark = pytest.mark.e2e

CALL_TIMEOUT = timedelta(seconds=15)
ARGS = {"query": "repo:kong/kong plugin"}
TOFU = {"pin": "enforce", "pins": "tofu"}


def policy(up: DemoUpstream, integrity: dict) -> dict:
    return {"services": {"gh": {"url": up.url}},
            "routes": {"gh": {"service": "gh", "paths": ["/gh"], "integrity": integrity}}}


async def listed(gateway: Gateway) -> list[str]:
    async with mcp_session(gateway.url("/gh")) as s:
        return [t.name for t in (await s.list_tools()).tools]


async def listed_until(gateway: Gateway, condition, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        names = await listed(gateway)
        if condition(names) or time.monotonic() > deadline:
            return names
        time.sleep(0.3)


def wait_for(condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (found := condition()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


async def test_an_edited_pin_file_is_read_while_the_gateway_runs(tmp_path):
    up = DemoUpstream(tmp_path, "--rug-pull", "--json-response", name="up-file")
    gw = Gateway(tmp_path, policy(up, {**TOFU, "pin_store": "edited-pins.json"}), intercept=False, name="gw-file")
    path = tmp_path / "edited-pins.json"  # beside the policy file
    try:
        assert await listed(gw) == TOOL_NAMES
        assert "search_code" not in await listed(gw)  # the rug pull: withheld
        data = json.loads(path.read_text())
        pinned = data["routes"]["gh"].pop("search_code")["digest"]
        path.write_text(json.dumps(data))  # the operator accepts the change
        names = await listed_until(gw, lambda n: "search_code" in n)
        assert names == TOOL_NAMES  # pinned anew, the others kept
        async with mcp_session(gw.url("/gh")) as s:
            await s.list_tools()
            assert not (await s.call_tool("search_code", ARGS, read_timeout_seconds=CALL_TIMEOUT)).isError
        kept = wait_for(lambda: json.loads(path.read_text())["routes"]["gh"].get("search_code"))
        assert kept["digest"] != pinned and set(json.loads(path.read_text())["routes"]["gh"]) == set(TOOL_NAMES)
    finally:
        gw.stop()
        up.stop()
