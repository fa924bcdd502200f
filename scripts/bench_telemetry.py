"""What tracing costs the gateway per governed message, in CPU time, without a network or another
process in the measurement: the real addon (every hook, its child addons included) runs in
process with mitmproxy's test master on synthetic flows (`tools/call` allowed by a tool ACL,
answered with JSON), first with telemetry off, then exporting to a local OTLP sink at
sampling 1.0, interleaved in rounds. The machine's other load shows in wall-clock figures; CPU
time of this process is far less exposed to it (the SDK's export thread is in this process and
counted).

    .venv/bin/python scripts/bench_telemetry.py [--flows N] [--rounds R]"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "addons"), str(ROOT)]

from mitmproxy.addons.proxyserver import Proxyserver  # noqa: E402
from mitmproxy.proxy.mode_specs import ProxyMode  # noqa: E402
from mitmproxy.test import taddons, tflow, tutils  # noqa: E402

from mcpgw.addon import MCPGateway  # noqa: E402
from tests.support.procs import free_port  # noqa: E402

POLICY = """
consumer_groups: [developer]
consumers:
  dev: {groups: [developer], keys: [bench-key]}
services:
  gh: {url: "http://127.0.0.1:9/mcp"}
routes:
  github-mcp:
    service: gh
    paths: [/github-mcp]
    key_auth: {hide_credentials: true}
    acl:
      consumer_identifier: username
      include_consumer_groups: true
      default_acl: [{scope: tools, deny: [developer]}]
      tools: [{name: search_repositories, acl: {allow: [developer]}}]
"""
BODY = (b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search_repositories",'
        b'"arguments":{"query":"model context protocol"}}}')
ANSWER = b'{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"3 repositories"}]}}'


def flow():
    f = tflow.tflow()
    f.client_conn.proxy_mode = ProxyMode.parse("reverse:http://127.0.0.1:9@8443")
    f.client_conn.timestamp_tls_setup = None
    f.request.method, f.request.path, f.request.host, f.request.port = "POST", "/github-mcp", "127.0.0.1", 9
    f.request.headers.update({"Host": "localhost:8443", "Content-Type": "application/json", "apikey": "bench-key",
                              "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18",
                              "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    f.request.content = BODY
    return f


async def run(master, n: int) -> tuple[float, float]:
    from mitmproxy.proxy.layers.http import HttpRequestHeadersHook, HttpRequestHook, HttpResponseHeadersHook, HttpResponseHook

    flows = [flow() for _ in range(n)]  # built before the clock starts: tflow is slower than the gateway
    answers = [tutils.tresp(content=ANSWER) for _ in range(n)]
    cpu, wall = time.process_time(), time.perf_counter()
    for f, answer in zip(flows, answers):
        await master.addons.handle_lifecycle(HttpRequestHeadersHook(f))
        await master.addons.handle_lifecycle(HttpRequestHook(f))
        assert f.response is None, f.response.content  # forwarded
        f.response = answer
        f.response.headers["Content-Type"] = "application/json"
        await master.addons.handle_lifecycle(HttpResponseHeadersHook(f))
        await master.addons.handle_lifecycle(HttpResponseHook(f))
    return (time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6


def settle() -> None:
    """Wait for the pipeline an option change replaced to finish flushing in its own thread
    (Telemetry._stop): its CPU time would otherwise count in the next round."""
    for thread in threading.enumerate():
        if thread.name == "mcpgw-otlp-shutdown":
            thread.join(timeout=30)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sink_port = free_port()
    sink = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "bench_otlp_sink.py"), str(sink_port)],
                            stdout=subprocess.DEVNULL)
    results: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "policy.yaml"
            path.write_text(POLICY)
            addon = MCPGateway()
            with taddons.context(Proxyserver(), addon) as tctx:
                tctx.configure(addon, mcp_policy=str(path), keep_host_header=True)
                for _ in range(args.rounds):
                    for mode in ("off", "on"):
                        tctx.options.update(mcp_otlp=f"http://127.0.0.1:{sink_port}" if mode == "on" else "")
                        settle()
                        await run(tctx.master, 100)  # warm-up after the switch
                        results[mode].append(await run(tctx.master, args.flows))
                tctx.options.update(mcp_otlp="")
                time.sleep(2)  # the old pipeline flushes in its thread while the loop still exists
    finally:
        sink.terminate()
    off_cpu = statistics.median(r[0] for r in results["off"])
    on_cpu = statistics.median(r[0] for r in results["on"])
    off_wall = statistics.median(r[1] for r in results["off"])
    on_wall = statistics.median(r[1] for r in results["on"])
    print(f"per governed tools/call, all hooks, median of {args.rounds} rounds of {args.flows} flows:")
    print(f"  telemetry off: {off_cpu:7.1f} us CPU  {off_wall:7.1f} us wall")
    print(f"  telemetry on:  {on_cpu:7.1f} us CPU  {on_wall:7.1f} us wall   (sampling 1.0, OTLP/HTTP to a local sink)")
    print(f"  tracing costs {on_cpu - off_cpu:.1f} us CPU per message ({on_cpu / off_cpu:.2f}x the gateway's own hooks)")


if __name__ == "__main__":
    asyncio.run(main())
