"""docs/scaling.md's HAProxy and nginx configurations, as written there (read out of the page; only
hosts and ports substituted), in front of two real gateway processes that share one real
Redis-protocol server, with no sticky sessions:

- an official MCP client session (initialize, tools/list, tools/call) through the balancer
  succeeds while its requests land on both instances;
- one keep-alive connection's requests are balanced one by one (HAProxy in http mode);
- a session opened with one key is refused (404) to another key, whichever instance answers;
- a limit of N a minute allows exactly N through the balancer across both instances, and an `ip`
  limit is not escaped with forwarding headers;
- an instance stopped mid-session: HAProxy's active check of /healthz takes it out, and requests
  of the same session keep succeeding on the other (redispatched meanwhile; nginx: passed to the
  next upstream); an instance whose /healthz is not 200 never gets a request through HAProxy."""

from __future__ import annotations

import os
import re
import socket
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.debian_tool import tool
from tests.support.gateway import ROOT, DemoUpstream, Gateway, Process, jsonrpc, mcp_session
from tests.support.procs import free_port
from tests.support.redis_server import RedisServer
from tests.test_limits_redis_e2e import get_me, inside_one_window, open_session

pytestmark = pytest.mark.e2e

DEV, DEV2 = {"apikey": "dev-key"}, {"apikey": "dev2-key"}
CALL_TIMEOUT = timedelta(seconds=20)  # a refused call must fail the test, not hang it
# HAProxy's view once its checks have run: gw3 is gw1's process again, gw4 has no health endpoint
HEALTHY = {"gw1": ("UP", "L7OK"), "gw2": ("UP", "L7OK"), "gw3": ("UP", "L7OK"), "gw4": ("DOWN", "L7STS")}
LIMIT = 6  # tools/call a minute per consumer on /limited, counted in Redis


def doc_block(heading: str) -> str:
    """The first fenced code block under `heading` in docs/scaling.md."""
    text = (ROOT / "docs" / "scaling.md").read_text()
    section = text[text.index(f"\n{heading}\n"):]
    return re.search(r"```[a-z]*\n(.*?)```", section, re.S).group(1)


def substitute(config: str, listen: tuple[str, str], backends: list[int]) -> str:
    """The page's config with its listen address and its server addresses replaced: the i-th
    server address of the page becomes gateway i % len(backends) (the page also lists other
    machines; here they are the same two processes)."""
    assert listen[0] in config, listen
    config = config.replace(listen[0], listen[1])
    addresses = re.findall(r"(?m)^\s*server\s+(?:\S+\s+)?(\d+\.\d+\.\d+\.\d+:\d+)", config)
    assert len(addresses) >= 2, config
    for i, address in enumerate(addresses):
        config = re.sub(rf"(?m)^(\s*server\s+(?:\S+\s+)?){re.escape(address)}\b",
                        rf"\g<1>127.0.0.1:{backends[i % len(backends)]}", config, count=1)
    return config


def policy(up: DemoUpstream, redis: RedisServer) -> dict:
    key_auth = {"key_names": ["apikey"], "hide_credentials": True}
    return {
        "gateway": {"state": {"backend": "redis", "redis": {**redis.policy, "timeout": 0.5}}},
        "consumers": {"dev": {"keys": ["dev-key"]}, "dev2": {"keys": ["dev2-key"]}},
        "services": {"up": {"url": up.url}},
        "routes": {"mcp": {"service": "up", "paths": ["/mcp"], "key_auth": key_auth},
                   "limited": {"service": "up", "paths": ["/limited"], "key_auth": key_auth,
                               "rate_limits": {"strategy": "redis", "rules": [
                                   {"methods": ["tools/call"], "limit": [LIMIT], "window_size": [60]}]}},
                   "by-ip": {"service": "up", "paths": ["/by-ip"],
                             "rate_limits": {"strategy": "redis", "rules": [
                                 {"methods": ["tools/call"], "limit": [LIMIT], "window_size": [60],
                                  "identifier": "ip"}]}}},
    }


def wait_listening(port: int, process: Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(f"{process.cmd[0]} exited with {process.proc.returncode}:\n{process.output()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}:\n{process.output()}")


class Balancer:
    def __init__(self, kind: str, workdir: Path, backends: list[int]):
        self.kind, self.port, self.workdir = kind, free_port(), workdir
        binary = tool(kind)
        if kind == "haproxy":
            self.stats = workdir / "haproxy.sock"
            config = substitute(doc_block("## HAProxy"), ("bind :8000", f"bind 127.0.0.1:{self.port}"), backends)
            # the test's own observation point, before the page's config (which it leaves unchanged)
            config = f"global\n    stats socket {self.stats} level admin\n\n" + config
            path = workdir / "haproxy.cfg"
            path.write_text(config)
            cmd = binary.command("-db", "-f", str(path))
        else:
            page = substitute(doc_block("## nginx"), ("listen 8000;", f"listen 127.0.0.1:{self.port};"), backends)
            temp = "\n".join(f"    {k}_temp_path {workdir}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                           "scgi"))
            user = "user root;\n" if os.geteuid() == 0 else ""  # the workers must read the test's folder
            config = (f"{user}daemon off;\nworker_processes 1;\npid {workdir}/nginx.pid;\n"
                      f"error_log {workdir}/nginx-error.log info;\nevents {{ worker_connections 256; }}\n"
                      f"http {{\n    access_log {workdir}/nginx-access.log;\n{temp}\n{page}\n}}\n")
            path = workdir / "nginx.conf"
            path.write_text(config)
            cmd = binary.command("-p", str(workdir), "-c", str(path))
        self.process = Process(cmd, workdir / f"{kind}.log", env=binary.env)
        wait_listening(self.port, self.process)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def server_states(self) -> dict[str, tuple[str, str]]:
        """HAProxy's view of each gateway: name -> (status, last check's status), from `show stat`."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.stats))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
        # HAProxy prefixes the last result with "* " while the next check is running
        return {r["svname"]: (r["status"], r["check_status"].removeprefix("* ")) for r in rows
                if r["pxname"] == "gateways" and r["svname"] not in ("BACKEND", "FRONTEND")}

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture(scope="module", params=["haproxy", "nginx"])
def env(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"scaling-{request.param}")
    redis = RedisServer().start()
    up = DemoUpstream(workdir, name="up")
    gateways: list[Gateway] = []
    others: list[Gateway] = []
    balancer = None
    try:
        for name in ("gw1", "gw2"):
            gateways.append(Gateway(workdir, policy(up, redis), intercept=False, name=name,
                                    extra=["--set", "mcp_health=/healthz"]))
        backends = [gw.port for gw in gateways]
        if request.param == "haproxy":
            # the page's fourth server: a gateway whose port is open but that has no health
            # endpoint (mcp_health unset: /healthz is an unrouted path, refused with 403)
            unhealthy = Gateway(workdir, policy(up, redis), intercept=False, name="unhealthy")
            others.append(unhealthy)
            backends = [*backends, backends[0], unhealthy.port]
        balancer = Balancer(request.param, workdir, backends)
        if request.param == "haproxy":  # no request before the checks have decided
            wait_until(lambda: balancer.server_states() == HEALTHY, f"checks: {balancer.server_states()}")
        yield balancer, gateways, up, others
    finally:
        if balancer:
            balancer.stop()
        for gw in [*gateways, *others]:
            gw.stop()
        up.stop()
        redis.stop()


def served(gw: Gateway, path: str) -> int:
    """How many requests for `path` the gateway has answered (mitmdump's flow lines in its log)."""
    return len(re.findall(rf"(?m)^\S+: (?:POST|GET|DELETE) http://\S+{re.escape(path)}\b", gw.log()))


def wait_until(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def wait_spread(gateways: list[Gateway], path: str, before: list[int], what: str) -> None:
    """Until every gateway has answered a request for `path` since `before` (its
    flow line is logged after the answer left it, so a client may see the answer first)."""
    wait_until(lambda: all(served(gw, path) > n for gw, n in zip(gateways, before)),
               f"{what}: {[served(gw, path) for gw in gateways]} after {before}")


async def test_an_mcp_session_through_the_balancer_spreads_over_both_instances(env):
    balancer, (gw1, gw2), up, _ = env
    before = [served(gw1, "/mcp"), served(gw2, "/mcp")]
    async with mcp_session(balancer.url("/mcp"), headers=DEV) as session:
        tools = await session.list_tools()
        assert "get_me" in [t.name for t in tools.tools]
        for _ in range(4):
            result = await session.call_tool("get_me", {}, read_timeout_seconds=CALL_TIMEOUT)
            assert not result.isError, result
    assert up.tool_calls().count("get_me") >= 4
    # no stickiness: the one session's requests were answered by both processes. How many each
    # gets is HAProxy's leastconn choice: when the session's open GET stream lands on gw2, every
    # later request goes to the servers with no open connection (gw1, gw3: one process), so gw2
    # may answer that one request only.
    wait_spread([gw1, gw2], "/mcp", before, "the session's requests not spread")


async def test_one_connection_alternates_and_a_session_is_refused_to_another_key_everywhere(env):
    balancer, gateways, up, _ = env
    async with httpx.AsyncClient(timeout=30) as client:
        headers = await open_session(client, balancer.url("/mcp"), DEV)
        r = await client.post(balancer.url("/mcp"), json=jsonrpc("notifications/initialized", id=None), headers=headers)
        assert r.status_code == 202, r.text
        before = [served(gw, "/mcp") for gw in gateways]
        for i in range(4):  # one keep-alive connection: balanced per request, not per connection
            r = await client.post(balancer.url("/mcp"), json=get_me(i), headers=headers)
            assert r.status_code == 200, r.text
        wait_spread(gateways, "/mcp", before, "one instance answered all")
        up.reset()
        before = [served(gw, "/mcp") for gw in gateways]
        codes = [(await client.post(balancer.url("/mcp"), json=get_me(i), headers={**headers, **DEV2})).status_code
                 for i in range(4)]
        assert codes == [404] * 4, codes
        assert up.tool_calls() == []
        wait_spread(gateways, "/mcp", before, "not refused by both")
        r = await client.post(balancer.url("/mcp"), json=get_me(9), headers=headers)
        assert r.status_code == 200, r.text  # its owner still gets through


async def test_a_limit_counts_once_across_both_instances(env):
    balancer, gateways, up, _ = env
    async with httpx.AsyncClient(timeout=30) as client:
        headers = await open_session(client, balancer.url("/limited"), DEV)
        by_ip = await open_session(client, balancer.url("/by-ip"), {})
        up.reset()
        inside_one_window(60, need=8)
        before = [served(gw, "/limited") for gw in gateways]
        codes = [(await client.post(balancer.url("/limited"), json=get_me(i), headers=headers)).status_code
                 for i in range(LIMIT + 4)]
        # an attacker's forwarding headers: the gateway counts the address it sees (the balancer's)
        spoofed = [(await client.post(balancer.url("/by-ip"), json=get_me(i), headers={
            **by_ip, "X-Forwarded-For": f"203.0.113.{i}", "Forwarded": f"for=198.51.100.{i}",
            "X-Real-IP": f"192.0.2.{i}"})).status_code for i in range(LIMIT + 4)]
    assert codes == [200] * LIMIT + [429] * 4, codes
    wait_spread(gateways, "/limited", before, "not counted by both")
    assert spoofed == [200] * LIMIT + [429] * 4, spoofed
    assert up.tool_calls() == ["get_me"] * LIMIT * 2


async def test_a_stopped_instance_is_taken_out_and_the_session_goes_on(env):
    balancer, (gw1, gw2), up, others = env
    if balancer.kind == "haproxy":
        # the active check passed at layer 7 (/healthz answered 200) for the gateways, failed for
        # the one without the endpoint, though its port is open; no request ever reached it
        assert balancer.server_states() == HEALTHY
        log = others[0].log()
        assert re.search(r"(?m)^\S+: GET http://\S+/healthz", log) and not re.search(r"(?m)^\S+: (POST|DELETE) ", log)
    async with mcp_session(balancer.url("/mcp"), headers=DEV) as session:
        assert not (await session.call_tool("get_me", {})).isError
        gw2.stop()
        for _ in range(2):  # before any check noticed: refused connections go to the other instance
            assert not (await session.call_tool("get_me", {}, read_timeout_seconds=CALL_TIMEOUT)).isError
        if balancer.kind == "haproxy":
            wait_until(lambda: balancer.server_states()["gw2"][0] == "DOWN",
                       f"stopped gateway still in the pool: {balancer.server_states()}")
            assert balancer.server_states()["gw1"] == balancer.server_states()["gw3"] == ("UP", "L7OK")
        for _ in range(4):
            result = await session.call_tool("get_me", {}, read_timeout_seconds=CALL_TIMEOUT)
            assert not result.isError, result
