"""The gateway's own CPU time per `tools/call`, per hook event and per pipeline phase, in process:
the real addon (child addons included) in a mitmproxy master with mitmdump's default addons and
its Dumper, on synthetic flows (a `tools/call` the policy lets through, answered with JSON), for
each policy case of scripts/bench_cases.py (open, the key-auth + ACL policy of scripts/bench.py,
the seed recipe's decK file) beside scripts/bench_buffered_addon.py (the held floor, whose figures
are mitmproxy's dispatch of each event through the same chain). No network and no other process
in the measurement, so the figures hold on a loaded machine far better than wall-clock ones; they
leave out what the proxy core does per request (parsing, connections), which is the same for all.

    .venv/bin/python scripts/bench_hooks.py [--flows N] [--rounds R]"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import importlib.util
import inspect
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "addons"), str(ROOT), str(ROOT / "scripts")]

import yaml  # noqa: E402
from mitmproxy.addons import default_addons, dumper  # noqa: E402
from mitmproxy.proxy.layers.http import (HttpRequestHeadersHook, HttpRequestHook, HttpResponseHeadersHook,  # noqa: E402
                                         HttpResponseHook)
from mitmproxy.proxy.mode_specs import ProxyMode  # noqa: E402
from mitmproxy.test import taddons, tflow, tutils  # noqa: E402

import bench  # noqa: E402
from bench_cases import API_KEY, GITHUB_TOKEN, SEED_ENV, SEED_PATHS, open_policy, seed_deck  # noqa: E402
from mcpgw import pipeline  # noqa: E402
from mcpgw.addon import MCPGateway  # noqa: E402

UPSTREAM = "http://127.0.0.1:9/mcp"  # never contacted: the answers are synthetic
EVENTS = (("requestheaders", HttpRequestHeadersHook), ("request", HttpRequestHook),
          ("responseheaders", HttpResponseHeadersHook), ("response", HttpResponseHook))
BODY = (b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search_repositories",'
        b'"arguments":{"query":"model context protocol"}}}')
_TEXT = " ".join(f"octocat/repo-{i} model context protocol server, {i * 7} stars, Python" for i in range(32))
ANSWER = json.dumps({"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": _TEXT}],
                                                           "isError": False}}).encode()  # the demo's answer's size


def write_policy(case: str, workdir: Path) -> tuple[Path, str]:
    urls = {"json": UPSTREAM, "sse": UPSTREAM}
    if case == "seed":
        path = workdir / "kong-recipe.yaml"
        path.write_text(seed_deck(urls))
        return path, SEED_PATHS["json"]
    path = workdir / f"{case}.yaml"
    policy = open_policy(urls) if case == "open" else bench.gateway_policy(urls, "full")
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path, "/github-json"


def flow(route: str):
    f = tflow.tflow()
    f.client_conn.proxy_mode = ProxyMode.parse("reverse:http://127.0.0.1:9@8443")
    f.client_conn.timestamp_tls_setup = None
    f.request.method, f.request.path, f.request.host, f.request.port = "POST", route, "127.0.0.1", 9
    f.request.headers.update({"Host": "localhost:8443", "Content-Type": "application/json", "apikey": API_KEY,
                              "Authorization": GITHUB_TOKEN, "Accept": "application/json, text/event-stream",
                              "MCP-Protocol-Version": "2025-06-18", "Content-Length": str(len(BODY))})
    f.request.content = BODY
    return f


async def one_round(master, route: str, n: int) -> dict[str, float]:
    """CPU microseconds per flow spent in each hook event (all addons of the chain)."""
    flows = [flow(route) for _ in range(n)]  # built before the clock starts: tflow is slower than the gateway
    answers = [tutils.tresp(content=ANSWER) for _ in range(n)]
    for a in answers:
        a.headers["Content-Type"] = "application/json"
    spent = collections.Counter()
    clock = time.process_time
    for f, answer in zip(flows, answers):
        for name, hook in EVENTS:
            if name == "responseheaders":
                assert f.response is None, f.response.content  # forwarded
                f.response = answer
            start = clock()
            await master.addons.handle_lifecycle(hook(f))
            spent[name] += clock() - start
    return {name: spent[name] / n * 1e6 for name, _ in EVENTS}


class _ErrorCount(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count, self.first = 0, ""

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.first = self.first or record.getMessage()


PHASE_TIMES: collections.Counter = collections.Counter()


def timed(phase):
    name = pipeline.phase_name(phase).removeprefix("mcpgw.")
    if inspect.iscoroutinefunction(phase):
        @functools.wraps(phase)
        async def run_async(ctx, flow):
            start = time.process_time()
            try:
                return await phase(ctx, flow)
            finally:
                PHASE_TIMES[name] += time.process_time() - start
        return run_async

    @functools.wraps(phase)
    def run(ctx, flow):
        start = time.process_time()
        try:
            return phase(ctx, flow)
        finally:
            PHASE_TIMES[name] += time.process_time() - start
    return run


def time_phases() -> None:
    for attr, value in list(vars(pipeline).items()):
        if attr.endswith("PHASES") and isinstance(value, tuple):
            setattr(pipeline, attr, tuple(timed(p) for p in value))


def buffered_addon():
    spec = importlib.util.spec_from_file_location("bench_buffered_addon", bench.BUFFERED_ADDON)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.addons[0]


async def measure(case: str, flows: int, rounds: int, workdir: Path) -> tuple[dict[str, float], dict[str, float]]:
    path, route = write_policy(case, workdir) if case != "buffered" else (None, "/mcp")
    addon = buffered_addon() if case == "buffered" else MCPGateway()
    with taddons.context(*default_addons(), dumper.Dumper(), addon, loadcore=False) as tctx:
        tctx.options.update(flow_detail=0, confdir=str(workdir / "conf"))  # TlsConfig's CA, as in mitmdump
        if path is not None:
            tctx.configure(addon, mcp_policy=str(path), keep_host_header=True)
        errors = _ErrorCount()
        logging.getLogger().addHandler(errors)
        await one_round(tctx.master, route, 200)  # warm-up
        if errors.count:  # an addon failing on every flow would be measured failing, not working
            raise SystemExit(f"{case}: an addon logged an error: {errors.first}")
        results = [await one_round(tctx.master, route, flows) for _ in range(rounds)]
        per_event = {name: statistics.median(r[name] for r in results) for name, _ in EVENTS}
        per_phase: dict[str, float] = {}
        if case != "buffered":
            PHASE_TIMES.clear()
            await one_round(tctx.master, route, flows)
            per_phase = {name: t / flows * 1e6 for name, t in PHASE_TIMES.most_common()}
    return per_event, per_phase


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ.update(SEED_ENV)
    cases = ("buffered", "open", "gateway", "seed")
    events: dict[str, dict[str, float]] = {}
    phases: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:  # unwrapped phases first: the per-event figures carry no timer of ours
            events[case], _ = await measure(case, args.flows, args.rounds, Path(tmp))
        time_phases()
        for case in cases[1:]:
            _, phases[case] = await measure(case, args.flows, 1, Path(tmp))
    print(f"CPU microseconds per tools/call, median of {args.rounds} rounds of {args.flows} flows, in process "
          f"(mitmdump's {len(default_addons()) + 1} default addons in the chain):")
    print(f"{'hook event':24}" + "".join(f"{c:>10}" for c in cases))
    for name, _ in EVENTS:
        print(f"{name:24}" + "".join(f"{events[c][name]:10.1f}" for c in cases))
    print(f"{'all four':24}" + "".join(f"{sum(events[c].values()):10.1f}" for c in cases))
    print(f"{'over buffered':24}" + "".join(f"{sum(events[c].values()) - sum(events['buffered'].values()):10.1f}"
                                            for c in cases))
    print("\npipeline phases (CPU us per tools/call, one round, each phase timed by a wrapper):")
    names = sorted({n for c in cases[1:] for n in phases[c]}, key=lambda n: -phases["seed"].get(n, 0))
    print(f"{'phase':52}" + "".join(f"{c:>10}" for c in cases[1:]))
    for name in names:
        print(f"{name:52}" + "".join(f"{phases[c].get(name, 0):10.1f}" for c in cases[1:]))
    print(f"{'all phases':52}" + "".join(f"{sum(phases[c].values()):10.1f}" for c in cases[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
