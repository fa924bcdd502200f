#!/usr/bin/env python3
"""What Kong's request-validator costs a request (addons/mcpgw/request_validator/): the phase in
process, on a tools/call of about 1 KB, for

  none      a route without request_validator (the lookup the phase makes on every route);
  param     parameter_schema only: one query parameter, an integer;
  draft4    that, the content type and a draft 4 schema of the JSON-RPC envelope;
  kong      that, with Kong's field format instead (jsonrpc, id, method, params as a record).

Each figure is the median over rounds of the mean time per call (µs). The schemas are compiled
once per policy version, before the first measured call: what is measured is the per-request work.

    scripts/bench_request_validator.py [--rounds N] [--calls N]"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "addons"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from mitmproxy import http  # noqa: E402
from mitmproxy.test import tflow  # noqa: E402

from mcpgw.context import FlowContext  # noqa: E402
from mcpgw.policy.models import Policy  # noqa: E402
from mcpgw.policy.store import Snapshot  # noqa: E402
from mcpgw.request_validator import phase  # noqa: E402
from mcpgw.routing import RouteTable  # noqa: E402

PARAM = {"in": "query", "name": "team", "required": True, "schema": '{"type": "integer"}', "style": "form", "explode": True}
ENVELOPE = {"type": "object", "required": ["jsonrpc", "method"],
            "properties": {"jsonrpc": {"enum": ["2.0"]}, "method": {"type": "string"}, "params": {"type": "object"}}}
KONG_FIELDS = [{"jsonrpc": {"type": "string", "required": True, "one_of": ["2.0"]}}, {"id": {"type": "integer"}},
               {"method": {"type": "string", "required": True}},
               {"params": {"type": "record", "fields": [{"name": {"type": "string"}},
                                                        {"arguments": {"type": "map", "keys": {"type": "string"},
                                                                       "values": {"type": "string"}}}]}}]
CASES = {
    "none": None,
    "param": {"parameter_schema": [PARAM]},
    "draft4": {"parameter_schema": [PARAM], "version": "draft4", "body_schema": json.dumps(ENVELOPE)},
    "kong": {"parameter_schema": [PARAM], "body_schema": json.dumps(KONG_FIELDS)},
}
BODY = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                   "params": {"name": "search", "arguments": {f"k{i}": "v" * 40 for i in range(20)}}}).encode()


def setup(config: dict | None) -> tuple[FlowContext, http.HTTPFlow]:
    route = {"service": "s", "paths": ["/mcp"], **({"request_validator": config} if config else {})}
    policy = Policy.model_validate({"services": {"s": {"url": "http://127.0.0.1:9/mcp"}}, "routes": {"r": route}})
    snap = Snapshot(policy, RouteTable(policy), "bench", 1, "bench", ())
    headers = http.Headers([(b"host", b"localhost:8000"), (b"content-type", b"application/json")])
    flow = tflow.tflow(req=http.Request.make("POST", "http://localhost:8000/mcp?team=42", BODY, headers))
    ctx = FlowContext(snap, "gateway", snap.routes.match_gateway("/mcp"), frozenset({"localhost"}), "localhost:8000", "http")
    assert phase.validate_request(ctx, flow) is None  # compiled here, and the request conforms
    return ctx, flow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args(argv)
    targets = {name: setup(config) for name, config in CASES.items()}
    means: dict[str, list[float]] = {name: [] for name in CASES}
    for _, name in itertools.product(range(args.rounds), CASES):
        ctx, flow = targets[name]
        start = time.perf_counter()
        for _ in range(args.calls):
            phase.validate_request(ctx, flow)
        means[name].append((time.perf_counter() - start) / args.calls * 1e6)
    print(f"request-validator phase, in process, {len(BODY)} B tools/call, median of {args.rounds} rounds x {args.calls} calls:")
    for name, values in means.items():
        print(f"  {name:7} {statistics.median(values):8.1f} µs a request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
