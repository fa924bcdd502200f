#!/usr/bin/env python3
"""What a rate-limit check costs: this tree's gateway three times, with the same policy (key-auth,
the tool ACL of scripts/bench.py) and

  nolimits  no rate_limits;
  local     rate_limits strategy local: a per-request rule (decided at request headers: every
            measured call is counted, never refused) and a per-tool rule for another tool
            (looked at once the body is read, not counted): one counter check per call;
  redis     the same rules with strategy redis, against a real valkey-server/redis-server on
            loopback (tests/support/redis_server.py).

Calls interleave the targets one by one (the order rotates every call) so that machine noise
hits all alike: sequential tools/call over keep-alive connections against the JSON demo upstream. Reports median and p90 latency and the ratios local/nolimits and redis/nolimits
(targets: 1.02 and 1.10).

    scripts/bench_limits.py [--rounds N] [--requests N] [--quick]"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "addons", ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench import (  # noqa: E402
    BenchError, GATEWAY_ENTRY, HOST, MITMDUMP, MITMDUMP_QUIET, TIMEOUT, gateway_policy, open_session, percentile,
    prime, timed_call,
)
from tests.support.procs import DEMO_UPSTREAM, DEMO_UPSTREAM_READY, free_port, start_process  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

TARGETS = {"local": 1.02, "redis": 1.10}
RULES = [{"limit": [1_000_000_000], "window_size": [60]},  # every HTTP request: decided at request headers
         {"tools": ["push_files"], "limit": [10], "window_size": [3600]}]  # looked at with the body, not counted


def policy(upstream: str, strategy: str | None, redis: RedisServer) -> dict:
    p = gateway_policy({"json": upstream}, "full")
    if strategy is not None:
        for route in p["routes"].values():
            route["rate_limits"] = {"strategy": strategy, "rules": RULES}
    if strategy == "redis":
        p["gateway"] = {"state": {"redis": {**redis.policy, "timeout": 1.0}}}
    return p


def _wait_serving(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code != 503:  # 503: no policy loaded yet
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"{url} did not start serving within {timeout:.0f}s")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=300, help="sequential calls per target and round")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 60 calls: a smoke run")
    args = parser.parse_args(argv)
    rounds, requests = (3, 60) if args.quick else (args.rounds, args.requests)
    processes = []
    redis = RedisServer()
    with tempfile.TemporaryDirectory(prefix="bench-limits-") as tmp:
        workdir = Path(tmp)
        try:
            redis.start()
            up_port = free_port()
            processes.append(start_process([sys.executable, str(DEMO_UPSTREAM), "--host", HOST, "--port", str(up_port),
                                            "--json-response"], ready=DEMO_UPSTREAM_READY))
            upstream = f"http://{HOST}:{up_port}/mcp"
            urls = {}
            for name, strategy in (("nolimits", None), ("local", "local"), ("redis", "redis")):
                path = workdir / f"{name}.yaml"
                path.write_text(yaml.safe_dump(policy(upstream, strategy, redis), sort_keys=False))
                port = free_port()
                processes.append(start_process(
                    [str(MITMDUMP), *MITMDUMP_QUIET, "--set", f"confdir={workdir / (name + '-conf')}",
                     "-s", str(GATEWAY_ENTRY), "--set", f"mcp_policy={path}",
                     "--mode", f"reverse:http://{HOST}:9@{HOST}:{port}"]))
                urls[name] = f"http://{HOST}:{port}/github-json"
            for url in urls.values():
                _wait_serving(url)
            samples: dict[str, list[float]] = {name: [] for name in urls}
            with httpx.Client(timeout=TIMEOUT) as client:
                sessions = {name: open_session(client, url) for name, url in urls.items()}
                for name, session in sessions.items():  # warm-up, and check that limits are in force
                    for _ in range(20):
                        prime(client, session)
                    r = client.post(session.url, content=session.call_body(), headers=session.headers)
                    limited = "x-ratelimit-limit-minute" in r.headers
                    if limited != (name != "nolimits"):
                        raise BenchError(f"{name}: rate-limit headers {'missing' if name != 'nolimits' else 'present'}")
                names = list(urls)
                for round_index in range(rounds):
                    for name in names:
                        prime(client, sessions[name])
                    for i in range(requests):  # call by call, in rotating order: drift hits all alike
                        shift = (i + round_index) % len(names)
                        for name in names[shift:] + names[:shift]:
                            samples[name].append(timed_call(client, sessions[name]))
                    print(f"round {round_index + 1}/{rounds} done", file=sys.stderr)
        except BenchError as e:
            print(f"bench_limits: {e}", file=sys.stderr)
            return 1
        finally:
            for p in reversed(processes):
                p.terminate()
            redis.stop()
    base = statistics.median(samples["nolimits"])
    print(f"rate-limit check cost: {rounds} rounds x {requests} sequential tools/call per target (JSON upstream)")
    print(f"{'target':<10} {'median ms':>10} {'p90 ms':>8} {'ratio':>7}  target")
    ok = True
    for name, values in samples.items():
        median = statistics.median(values)
        ratio = median / base
        goal = TARGETS.get(name)
        verdict = "" if goal is None else (f"<= {goal:.2f} " + ("ok" if ratio <= goal else "MISSED"))
        ok = ok and (goal is None or ratio <= goal)
        print(f"{name:<10} {median * 1000:>10.3f} {percentile(values, 0.9) * 1000:>8.3f} {ratio:>7.3f}  {verdict}")
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
