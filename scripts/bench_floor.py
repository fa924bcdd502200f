"""How far the gateway is from what any governing mitmproxy addon must pay: JSON `tools/call`s
through four proxies, each in front of its own demo upstream, interleaved, as per-round ratios to
the held floor.

  held      bare mitmdump holding request bodies (scripts/bench_buffered_addon.py): the floor
  skeleton  the floor plus parsing each body, one set lookup and one audit line per call
            (scripts/bench_skeleton_addon.py): the least a governing addon does
  open      the gateway, one open route (scripts/bench_cases.py)
  seed      the gateway on the seed recipe's decK file (key-auth, the tool ACL, datakit, cors)
  frame     with --frame: the open route with its pipeline emptied down to forwarding
            (scripts/bench_frame_addon.py): what the gateway costs before any phase runs
  held+d    with --dispatch: the floor with the gateway's event dispatch (mitm_dispatch.py,
            scripts/bench_dispatch_addon.py), which the gateway runs: the like-for-like floor

Each target has an upstream of its own, so each upstream's CPU per call is reported too (a
proxy that changed what it forwards would show there). Figures per round: the median latency of
the round's calls and the CPU time per call of each process; the report gives the median over
rounds of each target's per-round ratio to `held`, with the spread. Run it on a quiet machine.

    scripts/bench_floor.py                      # 8 rounds of 400 calls per target
    scripts/bench_floor.py --rounds 3 --calls 100
    scripts/bench_floor.py --frame              # also the gateway's frame (hooks, context, routing)
    scripts/bench_floor.py --dispatch           # also the floor with the gateway's event dispatch
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
from bench import (  # noqa: E402 - scripts/bench.py's helpers
    BUFFERED_ADDON, GATEWAY_ENTRY, HOST, MITMDUMP, MITMDUMP_QUIET, Target, open_session, prime, process_cpu,
    start_gateway, timed_call, wait_until_serving,
)
from bench_cases import SEED_ENV, SEED_PATHS, open_policy, seed_deck  # noqa: E402
from tests.support.procs import DEMO_UPSTREAM, DEMO_UPSTREAM_READY, free_port, start_process  # noqa: E402

SKELETON_ADDON = Path(__file__).resolve().parent / "bench_skeleton_addon.py"
FRAME_ADDON = Path(__file__).resolve().parent / "bench_frame_addon.py"
DISPATCH_ADDON = Path(__file__).resolve().parent / "bench_dispatch_addon.py"
TARGETS = ("held", "skeleton", "open", "seed")
BLOCK = 20  # calls to one target before the next one's


def start_target(name: str, work: Path, upstream_url: str):
    """(url, proxy process) of one target in front of `upstream_url`."""
    if name in ("held", "skeleton", "held+d"):
        port = free_port()
        scripts = {"held": [BUFFERED_ADDON], "skeleton": [SKELETON_ADDON], "held+d": [BUFFERED_ADDON, DISPATCH_ADDON]}
        process = start_process([str(MITMDUMP), *MITMDUMP_QUIET, "--set", f"confdir={work / name}",
                                 *(arg for script in scripts[name] for arg in ("-s", str(script))),
                                 "--mode", f"reverse:{upstream_url.rsplit('/', 1)[0]}@{HOST}:{port}"],
                                env={"MCPGW_SKELETON_AUDIT": str(work / "skeleton-audit.jsonl")})
        return f"http://{HOST}:{port}/mcp", process
    if name in ("open", "frame"):
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(open_policy({"json": upstream_url}), sort_keys=False))
        extra = ("-s", str(FRAME_ADDON)) if name == "frame" else ()
        port, process = start_gateway(work, name, GATEWAY_ENTRY, path, *extra)
        return f"http://{HOST}:{port}/github-json", process
    path = work / "kong-recipe.yaml"
    path.write_text(seed_deck({"json": upstream_url, "sse": upstream_url}))
    port, process = start_gateway(work, name, GATEWAY_ENTRY, path, env=SEED_ENV)
    return f"http://{HOST}:{port}{SEED_PATHS['json']}", process


def ratio_text(values: list[float], floor: list[float]) -> str:
    ratios = [a / b for a, b in zip(values, floor, strict=True)]
    return f"{statistics.median(ratios):.3f}x ({min(ratios):.3f}-{max(ratios):.3f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=400, help="timed calls per target and round")
    parser.add_argument("--frame", action="store_true",
                        help="also the gateway's open route with its pipeline emptied down to forwarding "
                             "(scripts/bench_frame_addon.py): what the gateway costs before any phase")
    parser.add_argument("--dispatch", action="store_true",
                        help="also the floor with the gateway's event dispatch (scripts/bench_dispatch_addon.py): "
                             "the like-for-like floor for the gateway's own work")
    args = parser.parse_args(argv)
    names = TARGETS[:3] + ("frame",) + TARGETS[3:] if args.frame else TARGETS
    if args.dispatch:
        names = names[:1] + ("held+d",) + names[1:]
    if args.rounds < 1 or args.calls < 1:
        parser.error("--rounds and --calls must be at least 1")
    processes = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
            work = Path(tmp)
            targets = {}
            for name in names:
                port = free_port()
                upstream = start_process([sys.executable, str(DEMO_UPSTREAM), "--host", HOST, "--port", str(port),
                                          "--json-response"], ready=DEMO_UPSTREAM_READY)
                processes.append(upstream)
                url, proxy = start_target(name, work, f"http://{HOST}:{port}/mcp")
                processes.append(proxy)
                targets[name] = (url, proxy, upstream)
            deadline = time.monotonic() + 30
            for name, (url, proxy, _) in targets.items():
                wait_until_serving(Target(name, {"json": url}, proxy), deadline)
            clients = {name: httpx.Client(timeout=10) for name in targets}
            sessions = {name: open_session(clients[name], url) for name, (url, _, _) in targets.items()}
            for name in targets:  # warm-up
                for _ in range(50):
                    prime(clients[name], sessions[name])
            latency = {n: [] for n in targets}
            cpu = {n: [] for n in targets}
            upstream_cpu = {n: [] for n in targets}
            for r in range(args.rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                samples = {n: [] for n in targets}
                before = {n: (process_cpu(t[1].pid), process_cpu(t[2].pid)) for n, t in targets.items()}
                for start in range(0, args.calls, BLOCK):
                    for name in order:
                        samples[name] += [timed_call(clients[name], sessions[name])
                                          for _ in range(min(BLOCK, args.calls - start))]
                for name, (_, proxy, upstream) in targets.items():
                    latency[name].append(statistics.median(samples[name]) * 1000)
                    cpu[name].append((process_cpu(proxy.pid) - before[name][0]) / args.calls * 1000)
                    upstream_cpu[name].append((process_cpu(upstream.pid) - before[name][1]) / args.calls * 1000)
                print(f"[round {r + 1}/{args.rounds}] " + "  ".join(
                    f"{n} {latency[n][-1]:.2f} ms, CPU {cpu[n][-1]:.2f} ms" for n in targets), file=sys.stderr, flush=True)
            for client in clients.values():
                client.close()
    finally:
        for process in reversed(processes):
            process.terminate()
    print(f"JSON tools/call, {args.rounds} rounds x {args.calls} calls per target, medians over rounds "
          f"(ratio: median of per-round ratios to held, with their spread)")
    print(f"{'target':10}{'latency ms':>12}{'CPU ms/call':>13}  {'latency / held':26}{'proxy CPU / held':26}"
          f"upstream CPU / held")
    for name in targets:
        print(f"{name:10}{statistics.median(latency[name]):12.3f}{statistics.median(cpu[name]):13.3f}  "
              f"{ratio_text(latency[name], latency['held']):26}{ratio_text(cpu[name], cpu['held']):26}"
              f"{ratio_text(upstream_cpu[name], upstream_cpu['held'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
