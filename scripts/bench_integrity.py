"""Benchmark: what tool integrity (docs/integrity.md) costs, as ratios against the same gateway
without it, on a 1,000-tool `tools/list` answer and on a 1 MB `tools/call` result.

End to end (the figures that count): one real mitmdump with the gateway and two routes to one
upstream, identical but for `integrity:` (pin: enforce with trust on first use, scan with the
default rules, secrets with the default actions). The upstream (in this process, uvicorn on a
thread) answers tools/list with 1,000 tools and tools/call with 1 MB of text, as JSON or as SSE.
Requests to the two routes are interleaved; the report gives the median latency of each and
their ratio (targets: 1.5x on the list, 1.2x on the result). A third route injects a credential
and has no `integrity:`: its answers are scanned for the gateway's own secrets only
(integrity/own_secrets.py), the "own secrets" cases, against the same route without it. On the
JSON result, the route without integrity is also asked with its answer held whole and nothing
else done (scripts/bench_hold_answers_addon.py): the "held" row, what holding a 1 MB answer
costs by itself, which the route with integrity pays too.

In process (where the time goes): the message layer alone on the same bodies, without and with
the integrity transforms, warm (pins and scan results cached, as after the first list).

    .venv/bin/python scripts/bench_integrity.py [--rounds 30] [--quick] [--redis]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "addons", ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from demo_github_tools import TOOLS  # noqa: E402
from mitmproxy.test import tflow  # noqa: E402

from mcpgw import context, inbound  # noqa: E402
from mcpgw.context import FlowContext  # noqa: E402
from mcpgw.integrity import approved  # noqa: E402
from mcpgw.integrity.own_secrets import Masker, SecretSet  # noqa: E402
from mcpgw.integrity.phases import check_tools  # noqa: E402
from mcpgw.policy.models import Policy  # noqa: E402
from mcpgw.policy.store import Snapshot  # noqa: E402
from mcpgw.protocol.messages import SSEStream, message_event_transform, transform_json_body  # noqa: E402
from mcpgw.routing import RouteTable  # noqa: E402
from tests.support.gateway import Gateway  # noqa: E402
from tests.support.threaded_server import ThreadedServer  # noqa: E402

HOLD_ADDON = Path(__file__).resolve().parent / "bench_hold_answers_addon.py"
INTEGRITY = {"pin": "enforce", "pins": "tofu", "scan": {}, "secrets": {}}
TARGETS = {"list": 1.5, "result": 1.2}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def catalog(n: int = 1000) -> list[dict]:
    base = [t.to_mcp_tool().model_dump(mode="json", exclude_none=True) for t in TOOLS]
    return [{**base[i % len(base)], "name": f"{base[i % len(base)]['name']}_{i}"} for i in range(n)]


def big_text(size: int = 1 << 20) -> str:
    # prose with the odd near miss ("task-", "eyJ"-free), as a large file or log would be
    line = "2026-12-01 12:00:00 INFO task-42 finished: wrote 1200 rows to the reports table in 3.2 s\n"
    return (line * (size // len(line) + 1))[:size]


def bodies() -> dict[str, bytes]:
    return {"list": json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": catalog()}}).encode(),
            "result": json.dumps({"jsonrpc": "2.0", "id": 2, "result": {
                "content": [{"type": "text", "text": big_text()}]}}).encode()}


class Upstream:
    """A stateless MCP-shaped upstream: JSON or SSE (`?sse`) answers from canned bodies."""

    def __init__(self, canned: dict[str, bytes]):
        self.canned = canned

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        rpc = json.loads(body)
        answer = self.canned["list" if rpc.get("method") == "tools/list" else "result"]
        answer = answer.replace(b'"id":', b'"id":' + json.dumps(rpc.get("id")).encode() + b', "_":', 1)
        sse = b"sse" in scope.get("query_string", b"")
        payload = b"event: message\ndata: " + answer + b"\n\n" if sse else answer
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream" if sse else b"application/json"),
            *([] if sse else [(b"content-length", str(len(payload)).encode())])]})
        await send({"type": "http.response.body", "body": payload})


def end_to_end(rounds: int, redis: dict | None = None) -> dict[str, float]:
    """`redis`: the server of gateway.state.redis: trust-on-first-use pins shared through it (one
    GET per request on the route with integrity, integrity.sync_pins)."""
    canned = bodies()
    server = ThreadedServer(Upstream(canned))
    server.start()
    workdir = Path(tempfile.mkdtemp(prefix="bench-integrity-"))
    policy = {"services": {"up": {"url": server.base_url + "/mcp"}},
              "routes": {"without": {"service": "up", "paths": ["/without"]},
                         "with": {"service": "up", "paths": ["/with"], "integrity": INTEGRITY}}}
    if redis is not None:
        policy["gateway"] = {"state": {"backend": "redis", "redis": redis}}
    policy["routes"]["injected"] = {"service": "up", "paths": ["/injected"], "credentials": {
        "mode": "inject", "allow_anonymous": True, "add": {"headers": ["Authorization:Bearer {env://BENCH_TOKEN}"]}}}
    gw = Gateway(workdir, policy, intercept=False, env={"BENCH_TOKEN": "bench-upstream-token-0c1d2e3f"},
                 extra=["-s", str(HOLD_ADDON)])
    ratios = {}
    try:
        with httpx.Client(timeout=60) as client:
            cases = {"list (JSON)": ("tools/list", "", "with"), "result (JSON)": ("tools/call", "", "with"),
                     "result (SSE)": ("tools/call", "?sse", "with")}
            if redis is None:  # (the Redis run measures pins: the own-secrets route has none)
                cases |= {"own secrets result (JSON)": ("tools/call", "", "injected"),
                          "own secrets result (SSE)": ("tools/call", "?sse", "injected")}
            for label, (method, query, measured) in cases.items():
                params = {"name": "get_me_0", "arguments": {}} if method == "tools/call" else {}
                # "held": the route without integrity, its answer held whole (HOLD_ADDON)
                names = ["without", measured, *(["held"] if label == "result (JSON)" and redis is None else [])]
                times: dict[str, list[float]] = {name: [] for name in names}
                for i in range(rounds + 3):
                    for name in names[i % len(names):] + names[:i % len(names)]:
                        msg = {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
                        route, hold = ("without", {"X-Bench-Hold": "1"}) if name == "held" else (name, {})
                        start = time.perf_counter()
                        resp = client.post(gw.url(f"/{route}{query}"), json=msg, headers={**HEADERS, **hold})
                        elapsed = time.perf_counter() - start
                        assert resp.status_code == 200 and len(resp.content) > 100_000, (name, resp.status_code)
                        if i >= 3:  # warm-up: the first list pins and scans
                            times[name].append(elapsed)
                a, b = statistics.median(times["without"]), statistics.median(times[measured])
                kind = "list" if method == "tools/list" else "result"
                ratios[label] = b / a
                print(f"e2e {label + (' Redis pins' if redis else ''):25} without {a * 1000:7.2f} ms  with {b * 1000:7.2f} ms  "
                      f"ratio {b / a:.2f} (target <= {TARGETS[kind]})")
                if "held" in times:
                    h = statistics.median(times["held"])
                    print(f"e2e {'  held, no integrity':25} without {a * 1000:7.2f} ms  held {h * 1000:7.2f} ms  "
                          f"ratio {h / a:.2f} (holding alone; with integrity over held: {b / h:.2f})")
    finally:
        gw.stop()
        server.stop()
    return ratios


def in_process(repeat: int) -> None:
    canned = bodies()
    route = {"service": "gh", "paths": ["/gh"], "integrity": INTEGRITY}
    policy = Policy.model_validate({"services": {"gh": {"url": "http://127.0.0.1:1/mcp"}}, "routes": {"gh": route}})
    snap = Snapshot(policy, RouteTable(policy), "bench", 1, str(Path(tempfile.mkdtemp()) / "policy.yaml"), ())
    flow = tflow.tflow()
    flow.request.method, flow.request.path = "POST", "/gh"
    flow.request.headers.clear()
    flow.request.headers.update(HEADERS)
    flow.request.content = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    ctx = context.attach(flow, FlowContext(snap, "gateway", snap.routes.match_gateway("/gh")))
    inbound.parse_client_messages(ctx, flow)
    check_tools(ctx, flow)
    transforms = ctx.server_transforms
    def judged(body: bytes) -> None:  # the full path: parsed and judged, as a list never seen before is
        approved.clear()
        transform_json_body(body, transforms)

    def best(fn, data: bytes) -> float:
        """The best of `repeat` runs, each on a fresh copy of `data`: as in a gateway, where every
        answer is new bytes (the screen remembers the last bytes it saw, by identity)."""
        times = []
        for _ in range(repeat):
            fresh = bytes(bytearray(data))
            start = time.perf_counter()
            fn(fresh)
            times.append(time.perf_counter() - start)
        return min(times)

    for label, body in canned.items():
        transform_json_body(body, transforms)  # warm: pinned and scanned once
        base = best(json.loads, body)
        full = best(lambda b: transform_json_body(b, transforms), body)
        slow = best(judged, body)
        event = b"event: message\ndata: " + body + b"\n\n"
        sse = best(lambda e: SSEStream([message_event_transform(transforms)])(e), event)
        print(f"in-process {label:6} json.loads {base * 1000:6.2f} ms; message layer with integrity: JSON "
              f"{full * 1000:6.2f} ms, SSE {sse * 1000:6.2f} ms; parsed and judged (the full path) {slow * 1000:6.2f} ms")
    secrets = SecretSet.of(["bench-upstream-token-0c1d2e3f"])  # one injected credential: five forms
    chunks = [canned["result"][i:i + 65536] for i in range(0, len(canned["result"]), 65536)]

    def masked() -> None:
        masker = Masker(secrets)
        for chunk in chunks:
            masker.feed(chunk)
        masker.feed(b"", final=True)

    t = min(timeit.repeat(masked, number=1, repeat=repeat))
    print(f"in-process own secrets masker on the 1 MB result in {len(chunks)} chunks {t * 1000:6.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="10 rounds")
    parser.add_argument("--redis", action="store_true",
                        help="also run end to end with the pins in Redis (a server the run starts: tests/support)")
    args = parser.parse_args()
    in_process(5 if args.quick else 20)
    end_to_end(10 if args.quick else args.rounds)
    if args.redis:
        from tests.support.redis_server import redis_server

        with redis_server() as server:
            end_to_end(10 if args.quick else args.rounds, server.policy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
