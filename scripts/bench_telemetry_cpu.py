"""What tracing costs a real gateway, in CPU time of its process: two mitmdump gateways with the
same policy in front of the same demo upstream, one exporting every span and metric over OTLP
(sampling 1.0, to a local sink that accepts and discards), interleaved in rounds of sequential
governed tools/call through the real network path. Each gateway's CPU time (user + system, its
export threads included, read from its CPU clock) is counted per request: unlike latency, it does not
depend on what else the machine runs, so it shows the cost on a shared machine too.

    .venv/bin/python scripts/bench_telemetry_cpu.py [--requests N] [--rounds R] [--block B] [--json]

Within a round the two gateways take turns, B calls at a time. Reports each gateway's CPU ms per
request and traced/plain (median of per-round ratios, and their spread), the figure the issue's
target (tracing on at most 1.05x tracing off) is about."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "addons"), str(ROOT)]

import httpx  # noqa: E402

from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, jsonrpc  # noqa: E402
from tests.support.procs import free_port  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from bench import process_cpu  # noqa: E402  (scripts/bench.py's CPU clock)
from tests.test_telemetry_e2e import KEY, policy  # noqa: E402  (the e2e policy: key-auth, a tool ACL)


def session(client: httpx.Client, url: str) -> dict[str, str]:
    headers = {**MCP_HEADERS, "apikey": KEY}
    init = client.post(url, headers=headers, json=jsonrpc("initialize", {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}))
    init.raise_for_status()
    headers |= {"mcp-session-id": init.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
    client.post(url, headers=headers, json=jsonrpc("notifications/initialized", id=None)).raise_for_status()
    return headers


def run(client: httpx.Client, gw: Gateway, headers: dict[str, str], n: int) -> float:
    """CPU seconds of the gateway over n tools/calls."""
    body = jsonrpc("tools/call", {"name": "search_repositories", "arguments": {"query": "mcp"}}, id=7)
    # no client trace context: each call starts a trace, which the traced gateway's sampling decides
    url = gw.url("/github-mcp")
    before = process_cpu(gw.process.proc.pid)
    for _ in range(n):
        resp = client.post(url, headers=headers, json=body)
        resp.read()
        if resp.status_code != 200:
            raise RuntimeError(f"{resp.status_code} {resp.text[:200]}")
    return process_cpu(gw.process.proc.pid) - before


def interleaved(client: httpx.Client, gateways: dict[str, tuple[Gateway, dict[str, str]]], n: int,
                block: int) -> dict[str, float]:
    """CPU ms per call of each gateway over n calls each, sent `block` at a time to one gateway and
    then the other (the first in turn alternating), so that the machine's other load, which comes
    in bursts, falls on both alike."""
    cpu = dict.fromkeys(gateways, 0.0)
    names = list(gateways)
    for i, start in enumerate(range(0, n, block)):
        for name in names if i % 2 == 0 else names[::-1]:
            gw, headers = gateways[name]
            cpu[name] += run(client, gw, headers, min(block, n - start))
    return {name: seconds / n * 1000 for name, seconds in cpu.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="tools/call per gateway and round (default 1000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (default 7)")
    parser.add_argument("--block", type=int, default=50, help="calls to one gateway before the other's (default 50)")
    parser.add_argument("--json", action="store_true", help="the upstream answers JSON instead of SSE")
    parser.add_argument("--sampling", default="1", help="mcp_otlp_sampling of the traced gateway (default 1)")
    args = parser.parse_args()
    sink_port = free_port()
    sink = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "bench_otlp_sink.py"), str(sink_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started: list = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        results: dict[str, list[float]] = {"plain": [], "traced": []}
        try:
            upstream = DemoUpstream(workdir, *(["--json-response"] if args.json else []))
            started.append(upstream)
            quiet = ["--set", "flow_detail=0"]
            plain = Gateway(workdir, policy(upstream), intercept=False, name="plain", extra=quiet)
            started.append(plain)
            traced = Gateway(workdir, policy(upstream), intercept=False, name="traced",
                             extra=[*quiet, "--set", f"mcp_otlp=http://127.0.0.1:{sink_port}",
                                    "--set", f"mcp_otlp_sampling={args.sampling}"])
            started.append(traced)
            with httpx.Client(timeout=60) as client:
                gateways = {name: (gw, session(client, gw.url("/github-mcp")))
                            for name, gw in (("plain", plain), ("traced", traced))}
                interleaved(client, gateways, 100, args.block)  # warm-up
                for r in range(args.rounds):
                    for name, figure in interleaved(client, gateways, args.requests, args.block).items():
                        results[name].append(figure)
                    print(f"round {r + 1}/{args.rounds}: plain {results['plain'][-1]:.3f} ms, traced "
                          f"{results['traced'][-1]:.3f} ms CPU per call "
                          f"({results['traced'][-1] / results['plain'][-1]:.3f}x)", file=sys.stderr)
        finally:
            for p in started:
                p.stop()
            sink.terminate()
    ratios = sorted(t / p for t, p in zip(results["traced"], results["plain"]))
    print(f"gateway process CPU per governed tools/call ({'JSON' if args.json else 'SSE'} answers), "
          f"median of {args.rounds} rounds of {args.requests} per gateway, interleaved {args.block} at a time:")
    print(f"  tracing off: {statistics.median(results['plain']):.3f} ms")
    print(f"  tracing on:  {statistics.median(results['traced']):.3f} ms   (sampling {args.sampling}, OTLP/HTTP to a "
          "local sink)")
    print(f"  traced/plain {statistics.median(ratios):.3f}x   (rounds {ratios[0]:.3f}x to {ratios[-1]:.3f}x; "
          "target <= 1.05x)")


if __name__ == "__main__":
    main()
