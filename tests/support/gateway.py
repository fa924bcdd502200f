"""End-to-end harness: a real `mitmdump` running the gateway addon, the demo upstream, and MCP
clients pointed at them (directly, through the gateway's reverse listener, or through its regular
proxy listener with the mitmproxy CA trusted)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import yaml

from .procs import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENTRY = ROOT / "addons" / "mcp_gateway.py"
DEMO_UPSTREAM = ROOT / "scripts" / "demo_upstream.py"


class Process:
    """A subprocess whose combined output goes to a file (never a pipe that could fill up)."""

    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path = ROOT):
        self.cmd = cmd
        self.log_path = log_path
        self._log = open(log_path, "wb")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                                     start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            if len(rx.findall(self.output())) >= count:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd[1:3]} exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.05)
        raise TimeoutError(f"{pattern!r} not seen within {timeout}s:\n{self.output()}")

    def stop(self, timeout: float = 10) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class DemoUpstream:
    """scripts/demo_upstream.py on a free port, recording what reaches it. With tls=True it serves
    HTTPS on https://localhost:PORT with a throwaway certificate, like a vendor's server."""

    def __init__(self, workdir: Path, *args: str, name: str = "upstream", tls: bool = False):
        self.port = free_port()
        extra: list[str] = []
        if tls:
            from .tls import make_server_cert

            cert, key = make_server_cert(workdir)
            extra = ["--tls-cert", str(cert), "--tls-key", str(key)]
        self.base = f"https://localhost:{self.port}" if tls else f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/mcp"
        self._verify = False if tls else True
        self.process = Process([sys.executable, str(DEMO_UPSTREAM), "--port", str(self.port), "--record", *extra, *args],
                               workdir / f"{name}.log")
        self.process.wait_for(r"demo upstream listening on")

    def requests(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.base}/_test/requests", timeout=10, verify=self._verify).json()

    def tool_calls(self) -> list[str]:
        return [r["tool"] for r in self.requests() if r.get("tool")]

    def reset(self) -> None:
        httpx.post(f"{self.base}/_test/reset", timeout=10, verify=self._verify).raise_for_status()

    def stop(self) -> None:
        self.process.stop()


class Gateway:
    """mitmdump with the gateway addon: a reverse (gateway) listener and a regular (intercept) one."""

    def __init__(self, workdir: Path, policy: Path | str | dict, *, intercept: bool = True,
                 extra: list[str] = (), env: dict[str, str] | None = None, name: str = "gateway",
                 wait: bool = True, entry: Path = ENTRY):
        self.workdir = workdir
        self.policy_path = workdir / f"{name}-policy.yaml"
        if isinstance(policy, dict):
            self.write_policy(policy)
        elif isinstance(policy, str) and "\n" in policy:
            self.policy_path.write_text(policy)
        else:
            self.policy_path = Path(policy)
        self.confdir = workdir / "mitmproxy-conf"
        self.port = free_port()
        self.proxy_port = free_port() if intercept else None
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [str(BIN / "mitmdump"), "-s", str(entry), "--set", f"mcp_policy={self.policy_path}",
               "--set", f"confdir={self.confdir}", "--set", "mcp_policy_poll=0.2", "--set", "ssl_insecure=true",
               "--mode", f"reverse:http://127.0.0.1:9@127.0.0.1:{self.port}"]
        if intercept:
            cmd += ["--mode", f"regular@127.0.0.1:{self.proxy_port}"]
        cmd += list(extra)
        self.process = Process(cmd, workdir / f"{name}.log", env=env)
        if wait:
            self.process.wait_for(r"listening at", count=2 if intercept else 1)
            self.process.wait_for(r"policy version \d+ loaded")

    @property
    def ca_cert(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def url(self, path: str = "") -> str:
        return self.base + path

    def write_policy(self, policy: dict | str) -> None:
        text = policy if isinstance(policy, str) else yaml.safe_dump(policy, sort_keys=False)
        tmp = self.policy_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.policy_path)  # atomic, like a config management tool would

    def log(self) -> str:
        return self.process.output()

    def stop(self) -> int | None:
        return self.process.stop()


def http_client(gateway: Gateway | None = None, *, intercept: bool = False, **kw: Any) -> httpx.AsyncClient:
    """An httpx client; with intercept=True it goes through the gateway's proxy listener and
    trusts the mitmproxy CA, as an agent configured with HTTPS_PROXY would."""
    if intercept:
        assert gateway is not None and gateway.proxy_port
        kw.setdefault("proxy", gateway.proxy_url)
        kw.setdefault("verify", str(gateway.ca_cert))
    kw.setdefault("timeout", httpx.Timeout(30, read=60))
    return httpx.AsyncClient(**kw)


@contextlib.asynccontextmanager
async def mcp_session(url: str, *, headers: dict[str, str] | None = None, gateway: Gateway | None = None,
                      intercept: bool = False, legacy: bool = False, auth: httpx.Auth | None = None,
                      **session_kw: Any) -> AsyncIterator[Any]:
    """An initialized official MCP client session (streamable HTTP, or legacy HTTP+SSE)."""
    from mcp import ClientSession
    from mcp.client.sse import sse_client
    from mcp.client.streamable_http import streamablehttp_client

    def factory(headers=None, timeout=None, auth=None):
        return http_client(gateway, intercept=intercept, headers=headers, auth=auth, follow_redirects=True)

    if legacy:
        transport = sse_client(url, headers=headers, auth=auth, httpx_client_factory=factory)
    else:
        transport = streamablehttp_client(url, headers=headers, auth=auth, httpx_client_factory=factory)
    async with transport as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write, **session_kw) as session:
            await session.initialize()
            yield session


def jsonrpc(method: str, params: dict | None = None, id: int | str | None = 1) -> dict:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if id is not None:
        msg["id"] = id
    if params is not None:
        msg["params"] = params
    return msg


MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def parse_mcp_body(resp: httpx.Response) -> list[dict]:
    """JSON-RPC messages of a response, whether it came as JSON or as SSE."""
    ctype = resp.headers.get("content-type", "")
    if ctype.startswith("text/event-stream"):
        return [json.loads(line[5:].strip()) for line in resp.text.splitlines() if line.startswith("data:")]
    body = resp.json()
    return body if isinstance(body, list) else [body]
