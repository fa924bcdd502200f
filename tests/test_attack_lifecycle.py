"""Attacks on the gateway's lifecycle: the moments when what it enforces is being set up or
changed, where a request could be served by something other than the policy the operator wrote.

- start-up race: a client that connects the instant the listener opens, before the gateway's
  required mitmproxy options are in force;
- a policy file read while it is being written: a valid prefix (a route without its `acl:`) must
  never be served;
- a mistyped option (`mcp_polciy`): mitmproxy keeps unknown names aside without a word, and the
  gateway would run its default policy instead of the one the operator named.

Each test runs a real mitmdump with the gateway and the demo upstream. Extend this module for any
new way of getting a request served during start-up, reload or reconfiguration."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from mcp import McpError

from tests.support.gateway import BIN, ENTRY, Gateway, mcp_session
from tests.support.procs import free_port

pytestmark = pytest.mark.e2e

INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "racer", "version": "1"}}


# -- start-up race ----------------------------------------------------------------------------


def _raw_initialize(port: int, path: str) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT}).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json, text/event-stream\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode() + body


def _connect_as_soon_as_listening(port: int, deadline: float) -> socket.socket:
    while time.monotonic() < deadline:
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            return s
        except ConnectionRefusedError:
            s.close()
    raise TimeoutError(f"nothing listened on {port}")


def test_a_client_connecting_as_the_listener_opens_gets_its_answer(workdir, upstream):
    policy = {"services": {"github": {"url": upstream.url}},
              "routes": {"github-mcp": {"service": "github", "paths": ["/github-mcp"]}}}
    answers = []
    for attempt in range(20):
        gw = Gateway(workdir, policy, intercept=False, wait=False, name=f"gw-race-{attempt}")
        try:
            with _connect_as_soon_as_listening(gw.port, time.monotonic() + 30) as s:
                s.settimeout(20)
                s.sendall(_raw_initialize(gw.port, "/github-mcp"))
                answer = b""
                try:
                    while chunk := s.recv(65536):
                        answer += chunk
                except ConnectionResetError:
                    pass
            answers.append(answer.partition(b"\r\n")[0])
        finally:
            gw.stop()
        assert answers[-1].startswith(b"HTTP/1.1 200"), f"attempt {attempt}: {answer[:300]!r}\n{gw.log()}"
    assert len(answers) == 20


# -- mistyped options -------------------------------------------------------------------------


def run_mitmdump(workdir: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "mitmdump"), "-s", str(ENTRY), "--set", f"confdir={workdir / 'mitmproxy-conf'}",
           "--mode", f"reverse:http://127.0.0.1:9@127.0.0.1:{free_port()}", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:  # it started and kept running: the typo went unnoticed
        out = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
        return subprocess.CompletedProcess(cmd, None, out, "")


@pytest.mark.parametrize("spelled, meant", [
    ("mcp_polciy", "mcp_policy"),
    ("mcp_policy_pol", "mcp_policy_poll"),
    ("mcp-policy", "mcp_policy"),
    ("MCP_POLICY", "mcp_policy"),
    ("mpc_policy", "mcp_policy"),
])
def test_a_mistyped_gateway_option_stops_the_gateway(workdir, spelled, meant):
    policy = workdir / "typo-policy.yaml"
    policy.write_text("services: {s: {url: 'http://127.0.0.1:1/mcp'}}\nroutes: {r: {service: s, paths: [/r]}}\n")
    done = run_mitmdump(workdir, "--set", f"{spelled}={policy}", timeout=15)
    output = done.stdout + done.stderr
    assert done.returncode not in (None, 0), f"the gateway started with {spelled}:\n{output}"
    assert spelled in output and meant in output, output
    assert "policy version" not in output  # nothing was served under the default policy meanwhile


def test_correctly_spelled_options_start_the_gateway(workdir):
    policy = workdir / "named-policy.yaml"
    policy.write_text("services: {s: {url: 'http://127.0.0.1:1/mcp'}}\nroutes: {named: {service: s, paths: [/r]}}\n")
    done = run_mitmdump(workdir, "--set", f"mcp_policy={policy}", "--set", "mcp_policy_poll=0.5", timeout=8)
    assert done.returncode is None, done.stdout + done.stderr  # still running when the test stopped waiting
    assert "1 route(s) named" in done.stdout


# -- half-written policy files ------------------------------------------------------------------

# The recipe's route, written the way an editor writes it: line by line, the ACL last. Every
# prefix below that ends after the `key_auth` line is a valid policy that lets developers call
# any tool.
SLOW_POLICY_LINES = [
    "consumer_groups: [admin, developer]",
    "consumers:",
    "  dev-user: {groups: [developer], keys: [dev-api-key]}",
    "  admin-user: {groups: [admin], keys: [admin-api-key]}",
    "services:",
    "  github: {url: '%(url)s'}",
    "routes:",
    "  github-mcp:",
    "    service: github",
    "    paths: [/github-mcp]",
    "    key_auth: {hide_credentials: true}",
    "    acl:",
    "      include_consumer_groups: true",
    "      default_acl:",
    "        - scope: tools",
    "          deny: [developer]%(extra)s",
]


def slow_policy(url: str, extra: str = "") -> list[str]:
    return [line % {"url": url, "extra": extra} for line in SLOW_POLICY_LINES]


async def test_a_policy_written_slowly_is_never_served_half_written(workdir, upstream):
    first = "\n".join(slow_policy(upstream.url)) + "\n"
    # A 1 s settle interval: the editor's 0.3 s pauses stay well inside it even on a busy machine.
    gw = Gateway(workdir, first, intercept=False, name="gw-slow-writer", extra=["--set", "mcp_policy_settle=1"])
    writing = threading.Event()
    done = threading.Event()

    def editor() -> None:
        """Rewrites the file in place, a line every 0.3 s (longer than the gateway's 0.2 s poll)."""
        lines = slow_policy(upstream.url, "  # reviewed")
        with open(gw.policy_path, "w") as f:
            writing.set()
            for line in lines:
                f.write(line + "\n")
                f.flush()
                time.sleep(0.3)
        done.set()

    outcomes = []
    try:
        async with mcp_session(gw.url("/github-mcp"), headers={"apikey": "dev-api-key"}) as session:
            threading.Thread(target=editor, daemon=True).start()
            writing.wait(5)
            while not done.is_set():
                try:
                    result = await session.call_tool("push_files", {"repo": "kong/kong", "files": []})
                    outcomes.append(("served", result))
                except McpError as e:
                    outcomes.append(("denied", str(e)))
        gw.process.wait_for(r"policy version 2 loaded", timeout=15)  # the finished file is loaded...
        async with mcp_session(gw.url("/github-mcp"), headers={"apikey": "dev-api-key"}) as session:
            with pytest.raises(McpError, match="not available for consumer group 'developer'"):
                await session.call_tool("push_files", {"repo": "kong/kong", "files": []})  # ...with its ACL
    finally:
        gw.stop()
    assert len(outcomes) > 20  # the client kept calling all along
    served = [o for o in outcomes if o[0] == "served"]
    assert not served, f"{len(served)} of {len(outcomes)} calls were served by a half-written policy"
    assert "push_files" not in upstream.tool_calls()
    assert "policy version 3" not in gw.log()  # one version for the finished file, none for a prefix
