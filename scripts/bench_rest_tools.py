"""REST tools benchmark: what a tools/call the gateway answers itself (docs/rest-tools.md) costs,
against the same REST request through bare mitmdump and through an open gateway route, in one run.

Starts a REST API (tests/support/rest_upstream.py, on its own thread), bare mitmdump as a
reverse proxy to it, and the gateway with one conversion-listener route (key-auth, a tool ACL,
one tool with a path, a query and a header parameter) and one open route (no plugin) on the same
service. Calls interleave the measures one by one, in an order that rotates every call, over
keep-alive connections, so that a burst of load on a shared machine hits all alike:

  - mitmdump: GET /api/orders/o-1?verbose=true with the header, proxied to the API;
  - open: the same GET through the gateway's open route (what the gateway costs a plain request);
  - gateway: the tools/call that makes exactly that request (validated, ACL decided, request
    built, sent, the JSON answer turned into a tool result), in an MCP session;
  - gateway tools/list: the route's catalog, filtered by the ACL (no API call);
  - baseline, with --baseline REV: the same tools/call through the gateway as it was at git
    revision REV (from 0c52e11 on, which has rest_tools), same policy: what a change costs.

It reports medians and the ratios of the call to mitmdump and to the open route (informational:
the gateway does an MCP exchange around the REST call, so it pays two parses and one more hop
inside its process). `scripts/bench --rest-tools` runs it after the main benchmark.

    scripts/bench_rest_tools.py              # about twenty seconds
    scripts/bench_rest_tools.py --rounds 2   # quicker, noisier
    scripts/bench_rest_tools.py --baseline HEAD~3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import HOST, MITMDUMP, MITMDUMP_QUIET, ROOT, baseline_entry, start_gateway, start_process  # noqa: E402
from tests.support.procs import free_port  # noqa: E402
from tests.support.rest_upstream import RestUpstream  # noqa: E402

KEY = "bench-rest-key"
TOOL = {"name": "get-order", "description": "Get an order", "path": "orders/{orderId}",
        "parameters": [{"name": "orderId", "in": "path", "schema": {"type": "string"}},
                       {"name": "verbose", "in": "query", "schema": {"type": "boolean"}},
                       {"name": "X-Tenant", "in": "header", "schema": {"type": "string"}}]}
CALL = {"name": "get-order", "arguments": {"orderId": "o-1", "verbose": True, "X-Tenant": "acme"}}
MCP = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def policy(api: str) -> dict:
    return {"version": 1, "consumer_groups": ["staff"], "consumers": {"bench": {"keys": [KEY], "groups": ["staff"]}},
            "services": {"api": {"url": api + "/api"}},
            "routes": {"orders": {"service": "api", "paths": ["/orders-mcp"], "key_auth": {"key_names": ["apikey"]},
                                  "acl": {"include_consumer_groups": True,
                                          "tools": [{"name": "get-order", "acl": {"allow": ["staff"]}}]},
                                  "rest_tools": {"mode": "conversion-listener", "tools": [TOOL]}},
                       "open": {"service": "api", "paths": ["/open"]}}}


def timed(send) -> float:
    start = time.perf_counter()
    response = send()
    response.raise_for_status()
    return time.perf_counter() - start


def session(client: httpx.Client, url: str) -> dict[str, str]:
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}
    answer = client.post(url, json=init, headers=MCP)
    answer.raise_for_status()
    return {**MCP, "Mcp-Session-Id": answer.headers["mcp-session-id"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--samples", type=int, default=50, help="requests per measure, target and round")
    parser.add_argument("--baseline", metavar="REV", help="also the tools/call through the gateway at git revision REV")
    args = parser.parse_args(argv)
    api = RestUpstream().start()
    processes = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-rest-") as tmp:
            work = Path(tmp)
            mport = free_port()
            processes.append(start_process([str(MITMDUMP), *MITMDUMP_QUIET, "--set", f"confdir={work / 'm'}",
                                            "--mode", f"reverse:{api.url}@{HOST}:{mport}"]))
            (work / "policy.yaml").write_text(yaml.safe_dump(policy(api.url)))
            gport, gproc = start_gateway(work, "gateway", ROOT / "addons" / "mcp_gateway.py", work / "policy.yaml")
            processes.append(gproc)
            if args.baseline:
                bport, bproc = start_gateway(work, "baseline", baseline_entry(work, args.baseline), work / "policy.yaml")
                processes.append(bproc)
            rest_url = f"http://{HOST}:{mport}/api/orders/o-1?verbose=true"
            open_url = f"http://{HOST}:{gport}/open/orders/o-1?verbose=true"
            mcp_url = f"http://{HOST}:{gport}/orders-mcp"
            with httpx.Client(headers={"apikey": KEY}, timeout=30) as client:
                deadline = time.monotonic() + 30
                while True:  # until both answer
                    try:
                        client.get(rest_url).raise_for_status()
                        client.get(open_url).raise_for_status()
                        headers = session(client, mcp_url)
                        if args.baseline:
                            base_url = f"http://{HOST}:{bport}/orders-mcp"
                            base_headers = session(client, base_url)
                        break
                    except httpx.HTTPError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)
                call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": CALL}
                listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
                measures = {
                    "mitmdump": lambda: client.get(rest_url, headers={"X-Tenant": "acme"}),
                    "open": lambda: client.get(open_url, headers={"X-Tenant": "acme"}),
                    "gateway": lambda: client.post(mcp_url, json=call, headers=headers),
                    "list": lambda: client.post(mcp_url, json=listing, headers=headers),
                }
                if args.baseline:
                    measures["baseline"] = lambda: client.post(base_url, json=call, headers=base_headers)
                    assert "isError" not in measures["baseline"]().json()["result"]
                assert "isError" not in measures["gateway"]().json()["result"]
                results: dict[str, list[float]] = {name: [] for name in measures}
                names = list(measures)
                for r in range(args.rounds):
                    for i in range(args.samples):  # call by call, in rotating order: drift hits all alike
                        shift = (i + r) % len(names)
                        for name in names[shift:] + names[:shift]:
                            results[name].append(timed(measures[name]))
        m, o, g, lst = (statistics.median(results[k]) * 1000 for k in ("mitmdump", "open", "gateway", "list"))
        print(f"REST tools benchmark: {args.rounds} rounds x {args.samples} samples per measure")
        print(f"{'measure (median ms)':<40}{'ms':>8}")
        print(f"{'REST GET through mitmdump':<40}{m:>8.2f}")
        print(f"{'REST GET through an open route':<40}{o:>8.2f}   ratio {o / m:.2f}x")
        print(f"{'tools/call through the gateway':<40}{g:>8.2f}   ratio {g / m:.2f}x, {g / o:.2f}x the open route "
              "(informational)")
        print(f"{'tools/list (answered, no API call)':<40}{lst:>8.2f}")
        if args.baseline:
            b = statistics.median(results["baseline"]) * 1000
            print(f"{'tools/call through the baseline':<40}{b:>8.2f}   gateway/baseline {g / b:.3f}x ({args.baseline})")
    finally:
        for p in processes:
            p.terminate()
        api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
