"""LLM route benchmark: what an LLM route (docs/ai.md) costs, against bare mitmdump, in one run.

Starts the demo OpenAI-compatible provider (scripts/demo_llm_provider.py), bare mitmdump as a
reverse proxy to it (stream_large_bodies=1: it streams, as the gateway does), and the gateway
with one llm/v1/chat route (key-auth, the provider key injected, the route's model options, the
usage counted; the gateway asks for include_usage and drops that chunk again). Every round
measures each target in a rotating order, over keep-alive connections:

  - time to first token: a streamed chat completion (100 words), to the first content chunk;
  - stream total: the same request to `data: [DONE]`;
  - JSON latency: a non-streamed chat completion;
  - CPU per call: the serving process's CPU time (user + system) over its measured calls, a
    figure the other processes on a loaded machine disturb far less than latencies.

A second route of the same gateway, balanced over two targets (the same provider) with answer
statuses in `failover_criteria`, sends each stream through the retry relay (ai/relay.py; JSON
calls go straight to the target and would be retried from the response hook): its rows show
what that costs. It reports medians over all samples and
gateway/mitmdump ratios (target 1.10x, informational).

A third target, `held`, is the floor any proxy of this kind stands on: bare mitmdump with
scripts/bench_buffered_addon.py (request bodies held until complete, answers streamed) and
connection_strategy=lazy (the upstream connection opened once the request is in, since a route,
not the listener, decides where it goes). Its rows say how much of the gateway/mitmdump ratio
that floor is already, and gateway/held what is the gateway's own.

    scripts/bench_llm.py              # about half a minute
    scripts/bench_llm.py --rounds 3   # quicker, noisier
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # noqa: E402 - scripts/bench.py's process helpers
    BUFFERED_ADDON, HOST, MITMDUMP, MITMDUMP_QUIET, ROOT, start_gateway, start_process,
)
from tests.support.procs import free_port  # noqa: E402

import re  # noqa: E402

PROVIDER = ROOT / "scripts" / "demo_llm_provider.py"
KEY, PROVIDER_KEY = "bench-llm-key", "sk-bench-provider-key"
TARGET = 1.10
BODY = {"model": "demo", "messages": [{"role": "user", "content": "measure the gateway please"}]}


def policy(provider_url: str) -> dict:
    return {"version": 1, "consumers": {"bench": {"keys": [KEY]}},
            "services": {"llm": {"url": provider_url + "/v1"}},
            "routes": {"llm": {"service": "llm", "paths": ["/llm"], "key_auth": {"key_names": ["apikey"]},
                               "ai": {"route_type": "llm/v1/chat",
                                      "auth": {"header_name": "Authorization", "header_value": f"Bearer {PROVIDER_KEY}"},
                                      "model": {"options": {"temperature": 0.5}}}},
                       # the same, balanced over two targets with status criteria: every call goes through the relay
                       "relay": {"service": "llm", "paths": ["/relay"], "key_auth": {"key_names": ["apikey"]},
                                 "ai": {"route_type": "llm/v1/chat",
                                        "auth": {"header_name": "Authorization", "header_value": f"Bearer {PROVIDER_KEY}"},
                                        "model": {"options": {"temperature": 0.5}},
                                        "targets": [{"url": provider_url + "/v1"}, {"url": provider_url + "/v1"}],
                                        "balancer": {"failover_criteria": ["error", "timeout", "http_429", "http_503"]}}}}}


def first_token_and_total(client: httpx.Client, url: str) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    with client.stream("POST", url, json={**BODY, "stream": True}, headers={"x-demo-words": "100"}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if first is None and line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                first = time.perf_counter() - start
            if line == "data: [DONE]":
                break
    if first is None:
        raise RuntimeError(f"{url}: no content chunk")
    return first, time.perf_counter() - start


def json_latency(client: httpx.Client, url: str) -> float:
    start = time.perf_counter()
    r = client.post(url, json=BODY)
    r.raise_for_status()
    assert r.json()["usage"]["total_tokens"] > 0
    return time.perf_counter() - start


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()  # the process and its threads (the gateway's audit writer included)
    return times.user + times.system


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--samples", type=int, default=20, help="requests per measure, target and round")
    args = parser.parse_args(argv)
    processes = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-llm-") as tmp:
            work = Path(tmp)
            port = free_port()
            processes.append(start_process([sys.executable, str(PROVIDER), "--port", str(port)],
                                           ready=re.compile("listening")))
            provider = f"http://{HOST}:{port}"
            mport = free_port()
            processes.append(start_process([str(MITMDUMP), *MITMDUMP_QUIET, "--set", f"confdir={work / 'm'}",
                                            "--set", "stream_large_bodies=1",
                                            "--mode", f"reverse:{provider}@{HOST}:{mport}"]))
            hport = free_port()
            processes.append(start_process([str(MITMDUMP), *MITMDUMP_QUIET, "--set", f"confdir={work / 'h'}",
                                            "-s", str(BUFFERED_ADDON), "--set", "connection_strategy=lazy",
                                            "--mode", f"reverse:{provider}@{HOST}:{hport}"]))
            (work / "policy.yaml").write_text(yaml.safe_dump(policy(provider)))
            gport, gproc = start_gateway(work, "gateway", ROOT / "addons" / "mcp_gateway.py", work / "policy.yaml")
            processes.append(gproc)
            urls = {"mitmdump": f"http://{HOST}:{mport}/v1/chat/completions",
                    "held": f"http://{HOST}:{hport}/v1/chat/completions",
                    "gateway": f"http://{HOST}:{gport}/llm/chat/completions",
                    "relay": f"http://{HOST}:{gport}/relay/chat/completions"}
            procs = {"mitmdump": psutil.Process(processes[1].popen.pid), "held": psutil.Process(processes[2].popen.pid),
                     "gateway": psutil.Process(gproc.popen.pid)}
            procs["relay"] = procs["gateway"]
            headers = {"apikey": KEY, "Authorization": f"Bearer {PROVIDER_KEY}"}  # the same bytes to both
            results = {name: {"ttft": [], "total": [], "json": [], "cpu": 0.0, "calls": 0} for name in urls}
            with httpx.Client(headers=headers, timeout=30) as client:
                deadline = time.monotonic() + 30
                for url in urls.values():  # until every target answers
                    while True:
                        try:
                            json_latency(client, url)
                            break
                        except (httpx.HTTPError, AssertionError):
                            if time.monotonic() > deadline:
                                raise
                            time.sleep(0.2)
                names = list(urls)
                for r in range(args.rounds):
                    for name in names[r % len(names):] + names[:r % len(names)]:
                        before = _cpu(procs[name])
                        for _ in range(args.samples):
                            ttft, total = first_token_and_total(client, urls[name])
                            results[name]["ttft"].append(ttft)
                            results[name]["total"].append(total)
                            results[name]["json"].append(json_latency(client, urls[name]))
                        results[name]["cpu"] += _cpu(procs[name]) - before
                        results[name]["calls"] += 2 * args.samples
            print(f"LLM route benchmark: {args.rounds} rounds x {args.samples} samples per measure")
            print(f"{'measure (median ms)':<28}{'mitmdump':>10}{'gateway':>10}{'ratio':>8}  target <= {TARGET:.2f}x")
            for prefix, name in (("", "gateway"), ("relay ", "relay")):
                if prefix:
                    print("a balanced route with http_* failover_criteria (streams through the retry relay), "
                          "against the same mitmdump:")
                for measure, label in (("ttft", "time to first token"), ("total", "stream total (100 words)"),
                                       ("json", "JSON latency")):
                    m = statistics.median(results["mitmdump"][measure]) * 1000
                    g = statistics.median(results[name][measure]) * 1000
                    ratio = g / m
                    print(f"{prefix + label:<28}{m:>10.2f}{g:>10.2f}{ratio:>7.2f}x  {'ok' if ratio <= TARGET else 'over target'}")
                m, g = (results[n]["cpu"] * 1000 / results[n]["calls"] for n in ("mitmdump", name))
                print(f"{prefix + 'CPU per call':<28}{m:>10.2f}{g:>10.2f}{g / m:>7.2f}x  (the process's user + system time)")
            print("the floor: request bodies held, upstream connections lazy (no gateway work), against the same "
                  "mitmdump, and the gateway over it:")
            print(f"{'measure (median ms)':<28}{'mitmdump':>10}{'held':>10}{'ratio':>8}{'gateway/held':>14}")
            for measure, label in (("ttft", "time to first token"), ("total", "stream total (100 words)"),
                                   ("json", "JSON latency")):
                m, h, g = (statistics.median(results[n][measure]) * 1000 for n in ("mitmdump", "held", "gateway"))
                print(f"{'held ' + label:<28}{m:>10.2f}{h:>10.2f}{h / m:>7.2f}x{g / h:>13.2f}x")
            m, h, g = (results[n]["cpu"] * 1000 / results[n]["calls"] for n in ("mitmdump", "held", "gateway"))
            print(f"{'held CPU per call':<28}{m:>10.2f}{h:>10.2f}{h / m:>7.2f}x{g / h:>13.2f}x")
    finally:
        for p in processes:
            p.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
