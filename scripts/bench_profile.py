"""Where a running mitmdump spends its CPU per tools/call: py-spy samples the process while a client
sends sequential `tools/call`s, and the samples are split per hook event and addon, per pipeline
phase and per part of mitmproxy.

    scripts/bench_profile.py                  # the seed recipe, 20 s of samples
    scripts/bench_profile.py --case buffered  # the held floor, for comparison
    scripts/bench_profile.py --case frame     # the open route with its pipeline emptied (bench_frame_addon.py)
    scripts/bench_profile.py --svg x.svg      # also a flame graph

The figures are CPU milliseconds per call on the process's main thread (samples / rate / calls),
inclusive: a hook's figure contains its phases'. py-spy samples without pausing the process
(--nonblocking), so the profiled gateway runs at its own pace; sampling at 1000/s still costs it
some time (the calls/s reported are slower than scripts/bench's). Needs py-spy (the test extra) and
ptrace rights on the process (root, or kernel.yama.ptrace_scope=0)."""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - scripts/bench.py: the same processes and clients as the benchmark
from bench_cases import SEED_ENV, SEED_PATHS, open_policy, seed_deck  # noqa: E402

HOOKS = ("requestheaders", "request", "responseheaders", "response", "error", "http_connect", "server_connect",
         "server_connected", "next_layer", "client_connected", "client_disconnected", "server_disconnected")
FRAME = re.compile(r"^(?P<name>[^ ]+) \((?P<file>[^:]*)(?::\d+)?\)$")
CASES = ("seed", "open", "gateway", "buffered", "mitmdump", "frame")
FRAME_ADDON = Path(__file__).resolve().parent / "bench_frame_addon.py"  # the open route, its pipeline emptied


def start_target(case: str, workdir: Path, upstream_url: str,
                 entry: Path = bench.GATEWAY_ENTRY) -> tuple[str, bench.ManagedProcess]:
    urls = {"json": upstream_url}
    if case in ("buffered", "mitmdump"):
        options = ["-s", str(bench.BUFFERED_ADDON)] if case == "buffered" else ["--set", "stream_large_bodies=1"]
        port = int(urlsplit_port(upstream_url))
        ports, process = bench.plain_mitmdump(workdir / f"{case}-conf", {"json": (port, None)}, *options)
        return f"http://{bench.HOST}:{ports['json']}/mcp", process
    path, env, route = workdir / f"{case}-policy.yaml", None, "/github-json"
    if case == "seed":
        path, env, route = workdir / f"{case}-kong-recipe.yaml", SEED_ENV, SEED_PATHS["json"]
        path.write_text(seed_deck({"json": upstream_url, "sse": upstream_url}))
    elif case in ("open", "frame"):
        path.write_text(yaml.safe_dump(open_policy(urls), sort_keys=False))
    else:
        path.write_text(yaml.safe_dump(bench.gateway_policy({"json": upstream_url}, "full"), sort_keys=False))
    extra = ("-s", str(FRAME_ADDON)) if case == "frame" else ()
    port, process = bench.start_gateway(workdir, entry.parent.parent.name + case, entry, path, *extra, env=env)
    return f"http://{bench.HOST}:{port}{route}", process


def urlsplit_port(url: str) -> str:
    return url.rsplit(":", 1)[1].split("/", 1)[0]


class Load(threading.Thread):
    """Sequential tools/calls on one keep-alive connection until stopped."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.client = httpx.Client(timeout=bench.TIMEOUT)
        self.session = bench.open_session(self.client, url)
        self.calls = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            bench.timed_call(self.client, self.session)
            self.calls += 1


def cpu_per_call(pid: int, load: Load, calls: int) -> float:
    """Milliseconds of the process's CPU time (user + system, all threads) per call."""
    process = psutil.Process(pid)
    before = process.cpu_times()
    for _ in range(calls):
        bench.timed_call(load.client, load.session)
    after = process.cpu_times()
    return 1000 * (after.user + after.system - before.user - before.system) / calls


def classify(stack: list[tuple[str, str]]) -> dict[str, set[str]]:
    """The buckets one sample counts in (inclusive): hooks by addon, phases, mitmproxy parts."""
    found: dict[str, set[str]] = collections.defaultdict(set)
    in_hook = False
    for name, file in stack:
        if "mitmproxy/addonmanager.py" in file:
            found["hook dispatch"].add("mitmproxy addonmanager (all hooks, inclusive)")
        if name in HOOKS and ("mcpgw/" in file or "bench_buffered_addon" in file):
            found["hook"].add(f"{Path(file).stem}.{name}")
            in_hook = True
        if in_hook and "mcpgw/" in file and name != "run" and f"/{PHASE_FILES.get(name, '-')}" in file:
            found["phase"].add(f"{PHASE_FILES[name].removesuffix('.py')}.{name}")
    leaf = stack[-1][1] if stack else ""
    part = ("mcpgw" if "mcpgw/" in leaf else "mitmproxy proxy core" if "mitmproxy/proxy/" in leaf
            else "mitmproxy http model" if "mitmproxy/http.py" in leaf or "mitmproxy/net/" in leaf
            or "mitmproxy/coretypes" in leaf else "mitmproxy other" if "mitmproxy/" in leaf
            else "h11/h2/wsproto" if re.search(r"/(h11|h2|hpack|wsproto)/", leaf)
            else "asyncio" if "asyncio/" in leaf else "other")
    found["leaf"].add(part)
    if stack:
        found["self"].add(f"{stack[-1][0]} ({'/'.join(Path(leaf).parts[-2:])})")
    return found


def _phase_files() -> dict[str, str]:
    """phase function name -> its module file (path inside the package), from pipeline.py's tuples."""
    sys.path.insert(0, str(bench.ROOT / "addons"))
    from mcpgw import pipeline

    out = {}
    for value in vars(pipeline).values():
        if isinstance(value, tuple) and value and all(callable(p) for p in value):
            for phase in value:
                module = sys.modules[phase.__module__]
                rel = Path(module.__file__).relative_to(Path(pipeline.__file__).parent)
                out[phase.__name__] = str(rel)
    return out


PHASE_FILES: dict[str, str] = {}


def report(raw: Path, calls: int, seconds: float, rate: int, case: str) -> None:
    buckets: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [(m["name"], m["file"]) for f in stack_text.split(";") if (m := FRAME.match(f.strip()))]
        if frames and frames[0][0].startswith("process ") or stack_text.startswith("process"):
            frames = frames[1:]
        n = int(count)
        total += n
        for kind, names in classify(frames).items():
            for name in names:
                buckets[kind][name] += n
    per_call = 1000 / rate / max(1, calls)  # ms per sample per call
    print(f"\n{case}: {calls} tools/call in {seconds:.1f}s ({calls / seconds:.0f}/s while sampled at {rate}/s); "
          f"{total} samples with the GIL busy or running: {total * per_call:.3f} ms CPU per call")
    titles = {"hook dispatch": "mitmproxy hook dispatch", "hook": "hooks (inclusive), per addon",
              "phase": "pipeline phases (inclusive)", "leaf": "where the time is spent (innermost frame)",
              "self": "functions by own time"}
    for kind in ("leaf", "self", "hook dispatch", "hook", "phase"):
        print(f"  {titles[kind]}:")
        for name, n in buckets[kind].most_common(25):
            print(f"    {name:60} {n * per_call:7.3f} ms  {100 * n / max(1, total):5.1f}%")


def start_upstream(processes: list) -> str:
    """The demo upstream answering JSON, started and ready; its MCP endpoint."""
    port = bench.free_port()
    upstream = bench.start_process([sys.executable, str(bench.DEMO_UPSTREAM), "--host", bench.HOST,
                                    "--port", str(port), "--json-response"])
    processes.append(upstream)
    upstream.wait_for_line(bench.DEMO_UPSTREAM_READY, bench.START_TIMEOUT)
    return f"http://{bench.HOST}:{port}/mcp"


def cpu_rounds(rounds: int, baseline: str | None) -> int:
    """Every case side by side: CPU milliseconds per call, median over rounds, and each case's
    difference to the held floor (buffered): what its own work costs the process."""
    import statistics

    processes: list[bench.ManagedProcess] = []
    with tempfile.TemporaryDirectory(prefix="mcpgw-cpu-") as tmp:
        workdir = Path(tmp)
        try:
            upstream_url = start_upstream(processes)
            cases = {case: start_target(case, workdir, upstream_url) for case in CASES}
            if baseline:
                cases["baseline seed"] = start_target("seed", workdir, upstream_url,
                                                      bench.baseline_entry(workdir, baseline))
            processes += [p for _, p in cases.values()]
            loads = {}
            for case, (url, process) in cases.items():
                bench.wait_until_serving(bench.Target(case, {"json": url}, process), time.monotonic() + 30)
                loads[case] = Load(url)
                for _ in range(200):
                    bench.timed_call(loads[case].client, loads[case].session)
            figures: dict[str, list[float]] = {case: [] for case in cases}
            names = list(cases)
            for r in range(rounds):
                for case in names[r % len(names):] + names[:r % len(names)]:
                    figures[case].append(cpu_per_call(cases[case][1].popen.pid, loads[case], 1000))
                print(f"round {r + 1}: " + "  ".join(f"{c} {figures[c][-1]:.3f}" for c in names), file=sys.stderr)
            print(f"CPU ms per tools/call (JSON answer), median of {rounds} interleaved rounds of 1000 calls:")
            floor = statistics.median(figures["buffered"])
            for case in names:
                median = statistics.median(figures[case])
                print(f"  {case:16} {median:7.3f} ms   {median - floor:+7.3f} ms over buffered")
        finally:
            for process in reversed(processes):
                process.terminate()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=CASES, default="seed")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second (default %(default)s)")
    parser.add_argument("--svg", type=Path, help="also write a flame graph here")
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw samples (collapsed stacks) here")
    parser.add_argument("--cpu", type=int, metavar="ROUNDS",
                        help="instead of sampling: start every case and measure each one's CPU time per call, "
                             "interleaved round by round (1000 calls per case and round)")
    parser.add_argument("--baseline", metavar="REV", help="with --cpu: also the seed case on the gateway of "
                                                         "git revision REV")
    args = parser.parse_args(argv)
    if args.cpu:  # no sampling: py-spy not needed
        return cpu_rounds(args.cpu, args.baseline)
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if spy is None:
        print("py-spy not found: install the test extra (pip install -e .[test])", file=sys.stderr)
        return 1
    PHASE_FILES.update(_phase_files())
    processes = []
    with tempfile.TemporaryDirectory(prefix="mcpgw-profile-") as tmp:
        workdir = Path(tmp)
        try:
            url, target = start_target(args.case, workdir, start_upstream(processes))
            processes.append(target)
            bench.wait_until_serving(bench.Target(args.case, {"json": url}, target), time.monotonic() + 30)
            load = Load(url)
            for _ in range(200):  # warm up
                bench.timed_call(load.client, load.session)
            print(f"{args.case}: {cpu_per_call(target.popen.pid, load, 1000):.3f} ms CPU per call, unprofiled "
                  f"(process CPU time over 1000 sequential calls)")
            load.start()
            raw = workdir / "samples.txt"
            started, before = time.monotonic(), load.calls
            commands = [[spy, "record", "--pid", str(target.popen.pid), "--rate", str(args.rate), "--duration",
                         str(int(args.seconds)), "--nonblocking", "--gil", "--format", "raw", "--output", str(raw)]]
            if args.svg:
                commands.append([*commands[0][:-4], "--output", str(args.svg)])
            spies = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands]
            for s in spies:
                _, err = s.communicate(timeout=args.seconds + 60)
                if s.returncode != 0:
                    print(f"py-spy failed: {err.decode(errors='replace')}", file=sys.stderr)
                    return 1
            seconds, calls = time.monotonic() - started, load.calls - before
            load.stop.set()
            load.join(timeout=10)
            report(raw, calls, seconds, args.rate, args.case)
            if args.raw:
                shutil.copyfile(raw, args.raw)
        finally:
            for process in reversed(processes):
                process.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
