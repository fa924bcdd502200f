"""`scripts/gateway` with no arguments, or only demo options: the self-contained demo starts, prints
what to try, and every command it prints works, pasted as printed, through the gateway (issue 12
items 2-4). Attacks on the demo are in test_attack_demo.py; the TypeScript SDK, in
test_typescript_client.py."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap

import pytest

from tests.support.demo import GATEWAY, Demo
from tests.support.gateway import ROOT
from tests.support.procs import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = Demo(tmp_path_factory.mktemp("demo"))
    yield d
    d.stop()


def test_the_banner_names_the_consumers_and_both_headers(demo):
    assert "dev-user" in demo.banner and "dev-api-key" in demo.banner and demo.url in demo.banner
    assert "apikey" in demo.banner and "Authorization: Bearer" in demo.banner
    assert "HTTPS_PROXY=" not in demo.banner  # the upstream is plain http: that hint bypassed the gateway


def test_every_command_the_banner_prints_works_through_the_gateway(demo):
    commands = demo.commands()
    clients = [c for c in commands if c.startswith(".venv/bin/python")]
    curls = [c for c in commands if c.startswith("curl")]
    assert len(clients) == 3 and len(curls) == 2
    for command in commands:
        done = demo.run(command)
        out = done.stdout
        if command.startswith("curl"):
            assert done.returncode == 0 and out.startswith("HTTP/1.1 200"), (command, out, done.stderr)
            assert re.search(r"^x-mcp-gateway-route: github-mcp\r?$", out, re.M | re.I), (command, out)
            assert '"serverInfo"' in out
            continue
        assert "through the MCP gateway: route github-mcp" in out, (command, out, done.stderr)
        if "dev-api-key" in command:
            assert "6 tools visible" in out
        if "--call push_files" in command and "dev-api-key" in command:
            assert done.returncode == 2 and "Tool 'push_files' is not available for consumer group 'developer'" in out
        elif "--call push_files" in command:
            assert done.returncode == 0 and "push_files: " in out and "refused" not in out
        else:
            assert done.returncode == 0, (command, out, done.stderr)
    intercept = next(c for c in clients if "--proxy" in c)
    assert demo.upstream_url in intercept and f"127.0.0.1:{demo.proxy_port}" in intercept


def readme_blocks(after: str) -> list[str]:
    """The ```sh blocks of README.md's section headed `after`, up to the next heading."""
    blocks, fence, inside = [], None, False  # fence: the lines of the code block being read
    for line in (ROOT / "README.md").read_text().splitlines():
        if fence is not None:
            if line != "```":
                fence.append(line)
                continue
            if fence and fence[0] == "```sh" and inside:
                blocks.append("\n".join(fence[1:]) + "\n")
            fence = None
        elif line.startswith("```"):
            fence = [line]
        elif line.startswith("#"):
            inside = line == after
    return blocks


def on_this_demo(demo: Demo, script: str) -> str:
    return (script.replace("localhost:8443", f"localhost:{demo.port}")
            .replace("127.0.0.1:8080", f"127.0.0.1:{demo.proxy_port}")
            .replace("127.0.0.1:8931", f"127.0.0.1:{demo.upstream_port}"))


def test_the_readme_curl_tour_works(demo):
    intercept = next(b for b in readme_blocks("## The demo") if "curl -si -x" in b)
    done = demo.run(on_this_demo(demo, intercept))
    assert done.stdout.startswith("HTTP/1.1 200") and "X-MCP-Gateway-Route: github-mcp" in done.stdout, done
    (tour,) = readme_blocks("### A curl tour")
    done = demo.run("set -e\n" + on_this_demo(demo, tour))
    assert done.returncode == 0, (done.stdout, done.stderr)
    out = done.stdout
    listed = next(json.loads(line[5:]) for line in out.splitlines() if line.startswith("data:") and '"tools"' in line)
    assert len(listed["result"]["tools"]) == 6
    assert "Tool 'push_files' is not available for consumer group 'developer'" in out
    assert "Missing Authorization header" in out


def test_the_python_snippet_works_pasted_as_printed(demo):
    lines = demo.snippet("Python")
    assert any('"Authorization": "Bearer ' in line and '"apikey": ' in line for line in lines)
    last = lines[-1]
    assert last.endswith(": ...")
    body = "\n".join(lines[:-1] + [last[:-len("...")] + "\n" + textwrap.indent(textwrap.dedent("""\
        async with ClientSession(read, write) as session:
            await session.initialize()
            print(len((await session.list_tools()).tools))"""), "    ")])
    program = ("import asyncio\nimport httpx\nfrom mcp import ClientSession\n"
               "from mcp.client.streamable_http import streamable_http_client\n\n"
               "async def main():\n" + textwrap.indent(body, "    ") + "\n\nasyncio.run(main())\n")
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "6", (program, done.stdout, done.stderr)
    slashed = program.replace(f'"{demo.url}"', f'"{demo.url}/"')  # the upstream's redirect names the gateway
    assert slashed != program
    done = subprocess.run([sys.executable, "-c", slashed], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "6", (slashed, done.stdout, done.stderr)


def test_an_api_key_alone_is_told_what_is_missing(demo):
    import httpx

    answer = httpx.post(demo.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                        headers={"apikey": "dev-api-key", "Accept": "application/json, text/event-stream"}, timeout=20)
    wrong_key = httpx.post(demo.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                           headers={"apikey": "nope", "Authorization": "Bearer t"}, timeout=20)
    assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer resource_metadata=")
    message = answer.json()["message"]
    assert message != wrong_key.json()["message"] == "Unauthorized"
    assert "Authorization" in message and "OAuth access token for the upstream" in message
    assert "WWW-Authenticate" in message and "API key alone is not enough" in message


def test_the_banner_policy_is_the_file_the_gateway_loaded(demo):
    """Non-default ports: the gateway loads a copy of the demo policy; editing the file the banner
    names changes what the gateway does."""
    shown = demo.policy_path()
    assert re.search(rf"policy version 1 loaded from {re.escape(str(shown))} ", demo.process.output())
    assert f"127.0.0.1:{demo.upstream_port}" in shown.read_text()
    shown.write_text(shown.read_text().replace("keys: [dev-api-key]", "keys: [dev-api-key, edited-key]"))
    demo.process.wait_for(rf"policy version 2 loaded from {re.escape(str(shown))} ", timeout=20)
    done = demo.run(f".venv/bin/python scripts/demo_client.py --url {demo.url} --key edited-key")
    assert done.returncode == 0 and "6 tools visible" in done.stdout


def test_help_lists_the_demo_options():
    done = subprocess.run([str(GATEWAY), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    demo_help = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--help"],
                               capture_output=True, text=True, timeout=60).stdout
    options = [o for o in re.findall(r"^\s+(--[a-z-]+)", demo_help, re.M) if o != "--help"]
    assert {"--host", "--port", "--proxy-port", "--upstream-port", "--policy"} <= set(options)
    script = GATEWAY.read_text()
    for option in options:
        assert option in done.stdout, option
        assert f"{option}|{option}=*" in script, f"scripts/gateway does not hand {option} to the demo"


def test_a_busy_port_names_the_option_that_changes_it(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for option in ("--port", "--proxy-port", "--upstream-port"):
            others = {o: str(free_port()) for o in ("--port", "--proxy-port", "--upstream-port") if o != option}
            argv = [str(GATEWAY), option, str(port), *[x for kv in others.items() for x in kv]]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                                  env={**os.environ, "HOME": str(tmp_path)})
            assert done.returncode != 0
            assert f"port {port}" in done.stderr and "is in use" in done.stderr, done.stderr
            assert f"choose another with {option} PORT" in done.stderr, done.stderr


def test_host_moves_every_listener_and_the_banner_follows(tmp_path):
    other = "127.0.0.2"  # another loopback address: Linux answers on all of 127/8
    try:
        with socket.socket() as s:
            s.bind((other, 0))
    except OSError:
        pytest.skip(f"{other} cannot be bound here")
    demo = Demo(tmp_path, "--host", other)
    try:
        assert f"listening on {other}" in demo.banner
        for port in (demo.port, demo.proxy_port):
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers on 127.0.0.1"
        commands = demo.commands()
        assert all(other in c for c in commands), commands
        for command in (c for c in commands if c.startswith("curl")):
            done = demo.run(command)
            assert done.stdout.startswith("HTTP/1.1 200") and "X-MCP-Gateway-Route: github-mcp" in done.stdout, done
    finally:
        demo.stop()
