"""Performance benchmark: the gateway against bare mitmdump and against no proxy at all.

Starts two demo upstreams (one answering `tools/call` with application/json, one with an SSE
stream) and four ways to reach them:

  direct    the upstreams themselves, no proxy;
  mitmdump  bare mitmdump (same version, no addon) as a reverse proxy with
            stream_large_bodies=1, so that it streams responses as the gateway does;
  buffered  bare mitmdump with scripts/bench_buffered_addon.py, which only holds each request
            until its body is complete (as any addon that inspects request bodies before
            forwarding must) and streams responses: a reference that splits the gateway's
            overhead into what inspecting bodies at all costs and the gateway's own work;
  gateway   mitmdump with addons/mcp_gateway.py and a policy with one route per upstream
            (key-auth and a tool ACL when this tree supports them).
  open      the same gateway with one open route per upstream and no plugin.
  seed      the same gateway with the seed recipe's decK file (Kong's "Secure External MCP
            Gateway", tests/data/kong-recipe.yaml, pointed at the demo upstreams by
            scripts/bench_cases.py): datakit challenge, key-auth, tool ACL, cors.
  baseline  with --baseline REV: the gateway as it was at git revision REV, with the same policy,
            so that a change's cost is measured against the gateway without it in the same run.
  traced    with --telemetry: this tree's gateway exporting every span (sampling 1.0) and the MCP
            duration metrics over OTLP/HTTP to a sink that accepts and discards them
            (scripts/bench_otlp_sink.py); traced/gateway is what tracing costs.
  control   with --telemetry: a second gateway exactly like `gateway` (same tree, same policy);
            control/gateway is how far two identical processes differ in the same run, the
            resolution against which traced/gateway is read.
  oauth     with --oauth: this tree's gateway with the same routes and ACL, the caller identified
            by a JWT (validated with the test authorization server's JWKS, mapped to the same
            consumer, a required audience, scope and group, authenticated groups read from a claim) instead of key-auth, the token exchanged (RFC 8693, cached) for the
            upstream's and a claim forwarded as a header; oauth/gateway is what that costs.
            Every target then receives the same Authorization header, so requests stay equal.

Every client speaks raw Streamable HTTP with httpx over keep-alive connections: it opens an MCP
session (initialize, notifications/initialized, then Mcp-Session-Id on every request) and, after
a warm-up, measures

  - the latency of `tools/call search_repositories` answered as JSON and as SSE (median, p99);
  - the time to the first SSE event: from sending `tools/call run_workflow` with a progressToken
    to the first `data:` line carrying a message (the first progress notification);
  - throughput: requests/second for a fixed number of `tools/call`s from concurrent clients.

The targets are interleaved within every round, phase by phase and in a rotating order, and within
a latency or first-event series block by block (BLOCK calls to each target in turn), so that
machine noise, which on a shared machine comes in bursts of seconds, hits all of them alike; the report gives the median over rounds of each figure, and
the ratios gateway/mitmdump (against the performance targets), mitmdump/direct, buffered/mitmdump
and gateway/buffered as the median over rounds of each round's ratio. Finally it times the filtering of a 1,000-tool `tools/list`
(scripts/bench_filter.py). With --llm it then runs the LLM route case (scripts/bench_llm.py:
time to first token, stream total and JSON latency through an llm/v1/chat route, as
gateway/mitmdump ratios against bare mitmdump in front of the demo OpenAI-compatible provider).
With --limits it then runs the rate-limit case (scripts/bench_limits.py: the same gateway
without limits, with local and with Redis counters, interleaved, as ratios against the first).
With --rest-tools it then runs the REST tools case (scripts/bench_rest_tools.py: a tools/call the
gateway answers with a REST call, against the same REST GET through mitmdump and an open route).

The performance targets (gateway/mitmdump: median tools/call latency and time to the first SSE
event at most 1.10x, throughput at least 0.90x; filtering at most 1.5x a json.loads + json.dumps)
are informational: the exit status is 0 unless something failed to run. Then it measures tool
integrity (scripts/bench_integrity.py): pinning and scanning on a 1,000-tool list and a 1 MB
result, as ratios against the same gateway without them.

    scripts/bench              # about 3 minutes
    scripts/bench --quick      # well under a minute, fewer samples
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import io
import itertools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "addons", ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from tests.support.procs import (  # noqa: E402
    DEMO_UPSTREAM, DEMO_UPSTREAM_READY, ManagedProcess, ProcessStartError, free_port, start_process,
)
from bench_cases import API_KEY, CONSUMER, GITHUB_TOKEN, SEED_ENV, SEED_PATHS, open_policy, seed_deck  # noqa: E402

MITMDUMP = Path(sys.executable).parent / "mitmdump"
GATEWAY_ENTRY = ROOT / "addons" / "mcp_gateway.py"
BUFFERED_ADDON = Path(__file__).resolve().parent / "bench_buffered_addon.py"
OTLP_SINK = Path(__file__).resolve().parent / "bench_otlp_sink.py"
HOST = "127.0.0.1"  # everything listens and is reached here, nowhere else

PROTOCOL_VERSION = "2025-11-25"
CALL = {"name": "search_repositories", "arguments": {"query": "model context protocol"}}
WORKFLOW = {"owner": "octocat", "repo": "hello-world", "workflow_id": "ci.yml", "steps": 1, "delay_ms": 10}

TIMEOUT = httpx.Timeout(10.0)  # any single request; a stuck one fails the run instead of hanging it
START_TIMEOUT = 30.0  # seconds for a process to start answering

LATENCY_TARGET = 1.10  # gateway/mitmdump, at most
TTFE_TARGET = 1.10  # gateway/mitmdump, at most
THROUGHPUT_TARGET = 0.90  # gateway/mitmdump, at least
FILTER_TOOLS = 1000
BLOCK = 10  # calls to one target before the next target's, within a latency or first-event series


class BenchError(RuntimeError):
    """Something did not run as it should; the benchmark stops with this message."""


# --- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    rounds: int
    requests: int  # tools/call per latency series (per target, kind and round)
    first_event_requests: int  # run_workflow calls per time-to-first-event series
    concurrency: int
    throughput_requests: int  # tools/call per throughput run (per target, kind and round)
    warmup: int  # tools/call per session before measuring
    filter_repeat: int  # timing repetitions of the tools/list filtering benchmark (0: skip it)
    baseline: str | None = None  # a git revision whose gateway runs beside this tree's ("baseline")
    telemetry: bool = False  # also run this tree's gateway exporting OTLP ("traced")
    llm: bool = False  # also run the LLM route case (scripts/bench_llm.py)
    limits: bool = False  # also run the rate-limit case (scripts/bench_limits.py)
    rest_tools: bool = False  # also run the REST tools case (scripts/bench_rest_tools.py)
    oauth: bool = False  # also run this tree's gateway with OAuth + token exchange ("oauth")

    def describe(self) -> str:
        return (f"{self.rounds} round(s); per target and round: {self.requests} sequential calls per latency series, "
                f"{self.first_event_requests} streamed calls for the first SSE event, {self.throughput_requests} calls "
                f"from {self.concurrency} concurrent clients per throughput run")


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__,
        epilog="Progress goes to stderr, the report to stdout. Run it on a quiet machine: every process shares "
               "the same cores, so anything else running skews the figures.")
    parser.add_argument("--requests", type=int, metavar="N",
                        help="tools/call per latency series, per target and round (default 200; --quick: 40)")
    parser.add_argument("--concurrency", type=int, default=20, metavar="C",
                        help="concurrent clients in the throughput runs, each with its own connection and MCP "
                             "session (default: %(default)s)")
    parser.add_argument("--rounds", type=int, metavar="R",
                        help="rounds; every figure reported is the median over rounds (default 5; --quick: 2)")
    parser.add_argument("--throughput-requests", type=int, metavar="N",
                        help="tools/call per throughput run, per target, kind and round (default 15 per client; "
                             "--quick: 5 per client)")
    parser.add_argument("--quick", action="store_true", help="fewer samples: well under a minute, noisier figures")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run the gateway of git revision REV (a commit, tag or HEAD~N) with the same "
                             "policy, as target 'baseline', and report gateway/baseline: what a change costs, "
                             "measured in the same interleaved run")
    parser.add_argument("--telemetry", action="store_true",
                        help="also run this tree's gateway with OpenTelemetry export on (sampling 1.0, to a local "
                             "sink) as target 'traced', and report traced/gateway, beside "
                             "control/gateway (a second, identical gateway: the run's resolution)")
    parser.add_argument("--oauth", action="store_true",
                        help="also run this tree's gateway identifying callers by JWT with token exchange and a claim "
                             "header (the test authorization server, in-process) as target 'oauth', and report "
                             "oauth/gateway")
    parser.add_argument("--llm", action="store_true",
                        help="also run the LLM route case (scripts/bench_llm.py: time to first token, stream total "
                             "and JSON latency through an llm/v1/chat route, gateway/mitmdump)")
    parser.add_argument("--rest-tools", action="store_true",
                        help="also run the REST tools case (scripts/bench_rest_tools.py: a tools/call answered with a "
                             "REST call, against the same GET through mitmdump and an open route)")
    parser.add_argument("--limits", action="store_true",
                        help="also run the rate-limit case (scripts/bench_limits.py: local and Redis counters, "
                             "each against the same gateway without limits)")
    parser.add_argument("--no-filter", action="store_true",
                        help="skip the tools/list filtering benchmark (scripts/bench_filter.py)")
    args = parser.parse_args(argv)

    requests = args.requests if args.requests is not None else (40 if args.quick else 200)
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 5)
    for name, value, limit in (("--requests", requests, 100_000), ("--rounds", rounds, 1000),
                               ("--concurrency", args.concurrency, 200),
                               ("--throughput-requests", args.throughput_requests, 1_000_000)):
        if value is not None and not 1 <= value <= limit:
            parser.error(f"{name} must be between 1 and {limit}")
    throughput = args.throughput_requests or (5 if args.quick else 15) * args.concurrency
    return Config(
        rounds=rounds, requests=requests, first_event_requests=max(5, requests // 2), concurrency=args.concurrency,
        throughput_requests=throughput, warmup=max(5, min(50, requests // 4)),
        filter_repeat=0 if args.no_filter else (10 if args.quick else 30), baseline=args.baseline,
        telemetry=args.telemetry, llm=args.llm, oauth=args.oauth, limits=args.limits, rest_tools=args.rest_tools,
    )


_STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


# --- MCP over raw HTTP --------------------------------------------------------------------------


def jsonrpc(method: str, params: dict | None = None, id: int | None = None) -> bytes:
    message: dict = {"jsonrpc": "2.0", "method": method}
    if id is not None:
        message["id"] = id
    if params is not None:
        message["params"] = params
    return json.dumps(message, separators=(",", ":")).encode()


def check_result(response: httpx.Response, what: str) -> None:
    """A tools/call answer must be a successful JSON-RPC result, JSON or SSE: a refusal or an error
    would be answered faster and make the figures meaningless."""
    body = response.content
    if response.status_code != 200 or b'"result"' not in body or b'"isError":true' in body:
        raise BenchError(f"{what}: unexpected answer {response.status_code} "
                         f"{response.headers.get('content-type', '')}: {body[:300]!r}")


@dataclass
class Session:
    """An initialized MCP session at one URL: the headers every later request carries."""

    url: str
    headers: dict[str, str]
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(2))

    def call_body(self) -> bytes:
        return jsonrpc("tools/call", CALL, next(self.ids))


# Sent to every target alike, so that requests have the same size: the recipe's consumer key and a
# GitHub token (the seed recipe's datakit step wants one; the other targets pass it through).
BASE_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
                "apikey": API_KEY, "Authorization": GITHUB_TOKEN}


INITIALIZE = {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
              "clientInfo": {"name": "mcp-gateway-bench", "version": "1"}}


def open_session(client: httpx.Client, url: str) -> Session:
    response = client.post(url, content=jsonrpc("initialize", INITIALIZE, 1), headers=BASE_HEADERS)
    session_id = response.headers.get("mcp-session-id")
    if response.status_code != 200 or not session_id:
        raise BenchError(f"initialize at {url}: {response.status_code} {response.content[:300]!r}")
    headers = {**BASE_HEADERS, "Mcp-Session-Id": session_id, "MCP-Protocol-Version": PROTOCOL_VERSION}
    response = client.post(url, content=jsonrpc("notifications/initialized"), headers=headers)
    if response.status_code != 202:
        raise BenchError(f"notifications/initialized at {url}: {response.status_code} {response.content[:300]!r}")
    return Session(url, headers)


# The demo upstream (uvicorn) closes connections idle for 5 seconds. A request that a proxy sends
# on one just as it closes is answered 502, and a direct one fails to send: so before each series,
# every client makes one untimed call, retried once, and the series itself then has no idle gaps.
RETRYABLE = (httpx.TransportError,)


def prime(client: httpx.Client, session: Session) -> None:
    """One untimed tools/call, retried once if the connection was being closed."""
    for attempt in (1, 2):
        try:
            response = client.post(session.url, content=session.call_body(), headers=session.headers)
        except RETRYABLE:
            if attempt == 2:
                raise
            continue
        if response.status_code != 502 or attempt == 2:
            check_result(response, f"tools/call at {session.url}")
            return


async def prime_async(client: httpx.AsyncClient, session: Session) -> None:
    """`prime` for an async client."""
    for attempt in (1, 2):
        try:
            response = await client.post(session.url, content=session.call_body(), headers=session.headers)
        except RETRYABLE:
            if attempt == 2:
                raise
            continue
        if response.status_code != 502 or attempt == 2:
            check_result(response, f"tools/call at {session.url}")
            return


def timed_call(client: httpx.Client, session: Session) -> float:
    """Seconds for one tools/call, from sending it to the end of its answer."""
    body = session.call_body()
    start = time.perf_counter()
    response = client.post(session.url, content=body, headers=session.headers)
    elapsed = time.perf_counter() - start
    check_result(response, f"tools/call at {session.url}")
    return elapsed


def time_to_first_event(client: httpx.Client, session: Session) -> float:
    """Seconds from sending a tools/call that reports progress to the first SSE `data:` line that
    carries a message (the SDK may open the stream with an empty priming event first)."""
    request_id = next(session.ids)
    params = {"name": "run_workflow", "arguments": WORKFLOW, "_meta": {"progressToken": f"bench-{request_id}"}}
    body = jsonrpc("tools/call", params, request_id)
    first: float | None = None
    start = time.perf_counter()
    with client.stream("POST", session.url, content=body, headers=session.headers) as response:
        if response.status_code != 200 or not response.headers.get("content-type", "").startswith("text/event-stream"):
            response.read()
            raise BenchError(f"run_workflow at {session.url}: expected an SSE stream, got {response.status_code} "
                             f"{response.headers.get('content-type', '')}: {response.content[:300]!r}")
        lines = []
        for line in response.iter_lines():
            if first is None and line.startswith("data:") and line[5:].strip():
                first = time.perf_counter() - start
            lines.append(line)
    text = "\n".join(lines)
    if first is None or "notifications/progress" not in text or '"result"' not in text:
        raise BenchError(f"run_workflow at {session.url}: no progress notification and result in {text[:300]!r}")
    return first


async def run_throughput(sessions: list[Session], clients: list[httpx.AsyncClient], total: int) -> float:
    """Requests/second for `total` tools/calls shared among the clients, each sending its next
    call as soon as its previous one is answered (after an untimed call from each client)."""
    await asyncio.gather(*(prime_async(c, s) for c, s in zip(clients, sessions, strict=True)))
    remaining = total

    async def worker(client: httpx.AsyncClient, session: Session) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            response = await client.post(session.url, content=session.call_body(), headers=session.headers)
            check_result(response, f"tools/call at {session.url}")

    start = time.perf_counter()
    await asyncio.gather(*(worker(c, s) for c, s in zip(clients, sessions, strict=True)))
    return total / (time.perf_counter() - start)


# --- the processes ------------------------------------------------------------------------------


MITMDUMP_QUIET = ["--set", "termlog_verbosity=warn", "--set", "flow_detail=0"]


def gateway_policy(upstream_urls: dict[str, str], features: str) -> dict:
    """A policy with one route per upstream. With features "full", each route identifies the
    caller by API key (hidden from the upstream) and applies a tool ACL shaped like Kong's recipe:
    everything denied to developers unless a tool says otherwise."""
    policy = open_policy(upstream_urls)
    if features == "plain":
        return policy
    policy["consumer_groups"] = ["admin", "developer"]
    policy["consumers"] = {CONSUMER: {"groups": ["developer"], "keys": [API_KEY]}}
    for route in policy["routes"].values():
        route["key_auth"] = {"key_names": ["apikey"], "hide_credentials": True}
        route["upstream_identity_headers"] = True
        if features == "full":
            route["acl"] = {
                "include_consumer_groups": True,
                "default_acl": [{"scope": "tools", "deny": ["developer"]}],
                "tools": [
                    *({"name": name, "acl": {"allow": ["admin", "developer"]}}
                      for name in ("search_repositories", "get_file_contents", "list_issues", "list_pull_requests",
                                   "search_code", "run_workflow")),
                    *({"name": name, "acl": {"allow": ["admin"]}}
                      for name in ("create_issue", "push_files", "create_pull_request", "merge_pull_request")),
                ],
            }
    return policy


FEATURES = {
    "full": "key-auth (apikey header, hidden from the upstream) + tool ACL (10 tool rules, consumer group "
            "'developer') + X-Consumer-* identity headers",
    "key-auth": "key-auth (apikey header, hidden from the upstream) + X-Consumer-* identity headers; "
                "no tool ACL (this tree's policy format has none)",
    "plain": "plain routes (this tree's policy format has neither key-auth nor tool ACLs)",
}


def write_gateway_policy(path: Path, upstream_urls: dict[str, str]) -> str:
    """Write the richest policy this tree's gateway accepts; returns which one it is."""
    try:
        from mcpgw.policy.loader import PolicyError, load_policy_file
    except ImportError as e:
        raise BenchError(f"cannot import the gateway's policy loader from {ROOT / 'addons'}: {e}") from e
    problems = []
    for features in FEATURES:
        path.write_text(yaml.safe_dump(gateway_policy(upstream_urls, features), sort_keys=False))
        try:
            load_policy_file(path)
        except PolicyError as e:
            problems.append(str(e))
            continue
        return features
    raise BenchError("the gateway refuses even a plain policy:\n" + "\n".join(problems))


@dataclass
class Target:
    name: str
    urls: dict[str, str]  # kind ("json", "sse") -> MCP endpoint
    process: ManagedProcess | None = None


def mitmdump_version() -> str:
    try:
        return importlib.metadata.version("mitmproxy")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def wait_until_serving(target: Target, deadline: float) -> None:
    """Poll until every URL of the target opens an MCP session (a proxy is up and reaches its upstream)."""
    with httpx.Client(timeout=TIMEOUT) as client:
        for url in target.urls.values():
            while True:
                if target.process is not None and target.process.popen.poll() is not None:
                    raise BenchError(f"{target.name} exited with status {target.process.popen.returncode}:\n"
                                     f"{target.process.output}")
                try:
                    open_session(client, url)
                    break
                except (httpx.TransportError, BenchError) as e:
                    if time.monotonic() > deadline:
                        raise BenchError(f"{target.name} does not serve {url} after {START_TIMEOUT:.0f}s: {e}\n"
                                         + (target.process.output if target.process else "")) from None
                    time.sleep(0.1)


def check_enforcement(gateway: Target, features: str) -> None:
    """Make sure the gateway really applies its policy: a gateway that let everything through
    (or refused everything) would be measured doing the wrong work."""
    if features == "plain":
        return
    url = gateway.urls["json"]
    with httpx.Client(timeout=TIMEOUT) as client:
        anonymous = {k: v for k, v in BASE_HEADERS.items() if k not in ("apikey", "Authorization")}
        response = client.post(url, content=jsonrpc("initialize", INITIALIZE, 1), headers=anonymous)
        if response.status_code != 401:
            raise BenchError(f"the gateway answered {response.status_code} to a request without an API key, not 401")
        if features == "full":
            session = open_session(client, url)
            denied = {"name": "push_files", "arguments": {"owner": "o", "repo": "r", "branch": "main", "files": [],
                                                          "message": "m"}}
            response = client.post(url, content=jsonrpc("tools/call", denied, 2), headers=session.headers)
            if response.status_code == 200 and b'"result"' in response.content:
                raise BenchError("the gateway let a tool call through that its ACL denies")


def plain_mitmdump(confdir: Path, upstreams: dict[str, tuple[int, ManagedProcess]],
                   *options: str) -> tuple[dict[str, int], ManagedProcess]:
    """One mitmdump without the gateway, a reverse proxy per upstream: (its port per kind, the process)."""
    ports = {kind: free_port() for kind in upstreams}
    modes = itertools.chain.from_iterable(("--mode", f"reverse:http://{HOST}:{upstreams[kind][0]}@{HOST}:{port}")
                                          for kind, port in ports.items())
    return ports, start_process([str(MITMDUMP), *MITMDUMP_QUIET, "--set", f"confdir={confdir}", *options, *modes])


def baseline_entry(workdir: Path, revision: str) -> Path:
    """The gateway's entry script as it was at `revision`, unpacked from git into workdir."""
    tree = workdir / "baseline"
    tree.mkdir()
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", revision, "addons"],
                                 capture_output=True, check=True, timeout=60).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", b"") or b""
        raise BenchError(f"cannot unpack the gateway at revision {revision!r}: {e} {detail.decode(errors='replace')}")
    entry = tree / "addons" / "mcp_gateway.py"
    if not entry.is_file():
        raise BenchError(f"revision {revision!r} has no addons/mcp_gateway.py")
    return entry


def start_gateway(workdir: Path, name: str, entry: Path, policy_path: Path,
                  *options: str, env: dict[str, str] | None = None) -> tuple[int, ManagedProcess]:
    port = free_port()
    return port, start_process([str(MITMDUMP), *MITMDUMP_QUIET, "--set", f"confdir={workdir / (name + '-conf')}",
                                "-s", str(entry), "--set", f"mcp_policy={policy_path}", *options,
                                "--mode", f"reverse:http://{HOST}:9@{HOST}:{port}"], env=env)


BENCH_AUDIENCE = "mcp-bench"  # the oauth target's audience_required (openid-connect's, one of two entries)


def oauth_policy(upstream_urls: dict[str, str], features: str, auth) -> dict:
    """The gateway policy with key-auth replaced by an OAuth resource server (JWKS, a required
    audience, scope and group, authenticated groups from a claim), RFC 8693 token exchange toward each
    upstream and a claim header; same consumer, same ACL."""
    policy = gateway_policy(upstream_urls, features)
    client_id, client_secret = auth.introspection_client
    for route in policy["routes"].values():
        route.pop("key_auth", None)
        route["oauth"] = {
            "authorization_servers": [auth.url], "jwks_endpoint": auth.jwks_url,
            "consumer_claim": ["sub"], "consumer_by": ["username"], "scopes_required": ["openid"],
            "groups_required": ["reader"], "groups_claim": ["realm_access", "roles"],
            "authenticated_groups_claim": ["realm_access", "roles"],
            "audience_required": [BENCH_AUDIENCE, "mcp-other"], "audience_claim": ["aud"],
            "upstream_headers": [{"header": "X-User-Role", "path": ["realm_access", "roles"]}],
            "token_exchange": {"token_endpoint": auth.token_url, "client_id": client_id, "client_secret": client_secret,
                               "request": {"resource": policy["services"][route["service"]]["url"]}}}
    return policy


def start_oauth(workdir: Path, upstream_urls: dict[str, str], features: str,
                processes: list[ManagedProcess], stack: contextlib.ExitStack) -> Target:
    from tests.support.authserver import AuthServer  # the suite's real authorization server, in-process

    auth = AuthServer(access_token_lifetime=3600)
    auth.start()
    stack.callback(auth.stop)
    path = workdir / "oauth-policy.yaml"
    path.write_text(yaml.safe_dump(oauth_policy(upstream_urls, features, auth), sort_keys=False))
    port, gateway = start_gateway(workdir, "oauth", GATEWAY_ENTRY, path)
    processes.append(gateway)
    urls = {kind: f"http://{HOST}:{port}/github-{kind}" for kind in upstream_urls}
    token = auth.mint(CONSUMER, aud=[*urls.values(), BENCH_AUDIENCE], exp_in=7200,
                      extra={"realm_access": {"roles": ["reader", "writer"]}})
    BASE_HEADERS["Authorization"] = f"Bearer {token}"  # sent to every target alike
    return Target("oauth", urls, gateway)


@contextlib.contextmanager
def started_targets(workdir: Path, baseline: str | None = None, telemetry: bool = False,
                    oauth: bool = False) -> Iterator[tuple[list[Target], str]]:
    """The demo upstreams and the targets (three, or four with a baseline gateway), all running;
    every process stops on the way out."""
    processes: list[ManagedProcess] = []
    servers = contextlib.ExitStack()  # in-process servers (the --oauth authorization server)
    try:
        upstreams = {}
        for kind, options in (("json", ["--json-response"]), ("sse", [])):
            port = free_port()
            processes.append(start_process([sys.executable, str(DEMO_UPSTREAM), "--host", HOST, "--port", str(port),
                                            *options]))
            upstreams[kind] = (port, processes[-1])
        upstream_urls = {kind: f"http://{HOST}:{port}/mcp" for kind, (port, _) in upstreams.items()}

        bare_ports, bare = plain_mitmdump(workdir / "mitmdump-conf", upstreams, "--set", "stream_large_bodies=1")
        processes.append(bare)
        buffered_ports, buffered = plain_mitmdump(workdir / "buffered-conf", upstreams, "-s", str(BUFFERED_ADDON))
        processes.append(buffered)

        policy_path = workdir / "gateway-policy.yaml"
        features = write_gateway_policy(policy_path, upstream_urls)
        gateway_port, gateway = start_gateway(workdir, "gateway", GATEWAY_ENTRY, policy_path)
        processes.append(gateway)
        open_path = workdir / "open-policy.yaml"
        open_path.write_text(yaml.safe_dump(open_policy(upstream_urls), sort_keys=False))
        open_port, open_gateway = start_gateway(workdir, "open", GATEWAY_ENTRY, open_path)
        processes.append(open_gateway)
        seed_path = workdir / "kong-recipe.yaml"  # the seed recipe's decK file (scripts/bench_cases.py)
        seed_path.write_text(seed_deck(upstream_urls))
        seed_port, seed_gateway = start_gateway(workdir, "seed", GATEWAY_ENTRY, seed_path, env=SEED_ENV)
        processes.append(seed_gateway)
        if baseline is not None:
            baseline_port, baseline_gateway = start_gateway(workdir, "baseline", baseline_entry(workdir, baseline),
                                                            policy_path)
            processes.append(baseline_gateway)
        if telemetry:
            sink_port = free_port()
            processes.append(start_process([sys.executable, str(OTLP_SINK), str(sink_port)],
                                           ready="otlp sink listening"))
            traced_port, traced = start_gateway(workdir, "traced", GATEWAY_ENTRY, policy_path,
                                                "--set", f"mcp_otlp=http://{HOST}:{sink_port}",
                                                "--set", "mcp_otlp_sampling=1")
            processes.append(traced)
            control_port, control = start_gateway(workdir, "control", GATEWAY_ENTRY, policy_path)
            processes.append(control)
        if oauth:
            if features == "plain":
                raise BenchError("--oauth needs a tree whose policy has consumers (key-auth and the tool ACL)")
            oauth_target = start_oauth(workdir, upstream_urls, features, processes, servers)

        for kind, (_, process) in upstreams.items():
            try:
                process.wait_for_line(DEMO_UPSTREAM_READY, START_TIMEOUT)
            except ProcessStartError as e:
                raise BenchError(f"the {kind} demo upstream did not start: {e}") from None
        targets = [
            Target("direct", upstream_urls),
            Target("mitmdump", {kind: f"http://{HOST}:{port}/mcp" for kind, port in bare_ports.items()}, bare),
            Target("buffered", {kind: f"http://{HOST}:{port}/mcp" for kind, port in buffered_ports.items()}, buffered),
            Target("gateway", {kind: f"http://{HOST}:{gateway_port}/github-{kind}" for kind in upstreams}, gateway),
            Target("open", {kind: f"http://{HOST}:{open_port}/github-{kind}" for kind in upstreams}, open_gateway),
            Target("seed", {kind: f"http://{HOST}:{seed_port}{SEED_PATHS[kind]}" for kind in upstreams}, seed_gateway),
        ]
        if baseline is not None:
            targets.append(Target("baseline", {kind: f"http://{HOST}:{baseline_port}/github-{kind}"
                                               for kind in upstreams}, baseline_gateway))
        if telemetry:
            targets.append(Target("traced", {kind: f"http://{HOST}:{traced_port}/github-{kind}"
                                             for kind in upstreams}, traced))
            targets.append(Target("control", {kind: f"http://{HOST}:{control_port}/github-{kind}"
                                              for kind in upstreams}, control))
        if oauth:
            targets.append(oauth_target)
        deadline = time.monotonic() + START_TIMEOUT
        for target in targets:
            wait_until_serving(target, deadline)
        for target in targets[3:]:
            check_enforcement(target, {"open": "plain", "seed": "full"}.get(target.name, features))
        yield targets, features
    finally:
        for process in reversed(processes):
            process.terminate()
        servers.close()


# --- measuring ----------------------------------------------------------------------------------


CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def _process_clock() -> Callable[[int], int | None]:
    """clock_getcpuclockid(3): a process's CPU clock (every thread), read to the nanosecond, where
    /proc's utime and stime count 10 ms ticks (about 1% of a round of a few hundred calls)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        getcpuclockid = libc.clock_getcpuclockid
    except (OSError, AttributeError):
        return lambda pid: None

    def clock(pid: int) -> int | None:
        clock_id = ctypes.c_int()
        return clock_id.value if getcpuclockid(pid, ctypes.byref(clock_id)) == 0 else None

    return clock


_CPU_CLOCK = _process_clock()


def process_cpu(pid: int) -> float:
    """CPU seconds of a process so far (user + system, every thread): its CPU clock, else /proc."""
    clock_id = _CPU_CLOCK(pid)
    if clock_id is not None:
        try:
            return time.clock_gettime(clock_id)
        except OSError:  # (gone, or not readable here): /proc says why, or raises
            pass
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class Clients:
    """One target's clients: a sequential one with a session per kind (JSON and SSE answers) for
    the latency series, and per kind `concurrency` async ones for the throughput runs, each with
    its own keep-alive connection and MCP session."""

    sequential: httpx.Client
    sessions: dict[str, Session]
    pool_clients: dict[str, list[httpx.AsyncClient]]
    pool_sessions: dict[str, list[Session]]


METRICS = [  # (key, label, unit)
    ("json.median", "tools/call, JSON answer: median", "ms"),
    ("json.p99", "tools/call, JSON answer: p99", "ms"),
    ("sse.median", "tools/call, SSE answer: median", "ms"),
    ("sse.p99", "tools/call, SSE answer: p99", "ms"),
    ("first_event", "time to first SSE event: median", "ms"),
    ("json.rps", "throughput, JSON answers", "req/s"),
    ("sse.rps", "throughput, SSE answers", "req/s"),
]


class Benchmark:
    def __init__(self, config: Config, targets: list[Target], runner: asyncio.Runner, stack: contextlib.ExitStack):
        self.config = config
        self.targets = targets
        self.runner = runner
        self.results: dict[str, dict[str, list[float]]] = {key: {t.name: [] for t in targets} for key, _, _ in METRICS}
        # process CPU (user + system, all threads) per call, for the targets that are processes of their own
        self.results["cpu"] = {t.name: [] for t in targets if t.process is not None}
        self.clients: dict[str, Clients] = {}
        for target in targets:
            sequential = stack.enter_context(httpx.Client(timeout=TIMEOUT))
            sessions = {kind: open_session(sequential, url) for kind, url in target.urls.items()}
            pool_clients: dict[str, list[httpx.AsyncClient]] = {}
            pool_sessions: dict[str, list[Session]] = {}
            for kind, url in target.urls.items():
                pool_sessions[kind] = [open_session(sequential, url) for _ in range(config.concurrency)]
                pool_clients[kind] = [httpx.AsyncClient(timeout=TIMEOUT) for _ in range(config.concurrency)]
                stack.callback(self._close_async, pool_clients[kind])
            self.clients[target.name] = Clients(sequential, sessions, pool_clients, pool_sessions)
        progress(f"opened {len(targets) * len(targets[0].urls) * (config.concurrency + 1)} MCP sessions")

    def _close_async(self, clients: list[httpx.AsyncClient]) -> None:
        async def close_all() -> None:
            await asyncio.gather(*(c.aclose() for c in clients))

        self.runner.run(close_all())

    def warm_up(self) -> None:
        for target in self.targets:
            c = self.clients[target.name]
            for kind, session in c.sessions.items():
                for _ in range(self.config.warmup):
                    prime(c.sequential, session)
                burst = run_throughput(c.pool_sessions[kind], c.pool_clients[kind], 2 * self.config.concurrency)
                self.runner.run(burst)
            prime(c.sequential, c.sessions["sse"])
            for _ in range(3):
                time_to_first_event(c.sequential, c.sessions["sse"])
        progress(f"warmed up: {self.config.warmup} calls per session and kind, one throughput burst per kind")

    def order(self, round_index: int) -> list[Target]:
        shift = round_index % len(self.targets)
        return self.targets[shift:] + self.targets[:shift]

    def run_round(self, round_index: int) -> None:
        order = self.order(round_index)
        label = f"round {round_index + 1}/{self.config.rounds}"
        pids = {t.name: t.process.pid for t in self.targets if t.process is not None}
        cpu_before = {name: process_cpu(pid) for name, pid in pids.items()}
        self._run_round(order, label)
        # every target got the same calls this round: the series, the first events, the throughput
        # runs and the untimed call that primes each series and client
        c = self.config
        calls = 2 * c.requests + c.first_event_requests + 2 * c.throughput_requests + 3 + 2 * c.concurrency
        figures = {}
        for name, before in cpu_before.items():
            figures[name] = (process_cpu(pids[name]) - before) / calls * 1000
            self.results["cpu"][name].append(figures[name])
        progress(f"{label}  {'process CPU per call':38} "
                 + "  ".join(f"{name} {figure:8.3f}" for name, figure in figures.items()) + "  ms")

    def _run_round(self, order: list[Target], label: str) -> None:
        for kind in ("json", "sse"):
            series = self._interleaved(order, kind, timed_call, self.config.requests)
            figures = {}
            for name, samples in series.items():
                self.results[f"{kind}.median"][name].append(statistics.median(samples) * 1000)
                self.results[f"{kind}.p99"][name].append(percentile(samples, 0.99) * 1000)
                figures[name] = statistics.median(samples) * 1000
            self._progress(label, f"{kind.upper()} latency, median", figures, "ms")

        series = self._interleaved(order, "sse", time_to_first_event, self.config.first_event_requests)
        figures = {name: statistics.median(samples) * 1000 for name, samples in series.items()}
        for name, figure in figures.items():
            self.results["first_event"][name].append(figure)
        self._progress(label, "time to first SSE event, median", figures, "ms")

        for kind in ("json", "sse"):
            figures = {}
            for target in order:
                c = self.clients[target.name]
                rate = self.runner.run(run_throughput(c.pool_sessions[kind], c.pool_clients[kind],
                                                      self.config.throughput_requests))
                figures[target.name] = rate
                self.results[f"{kind}.rps"][target.name].append(rate)
            self._progress(label, f"{kind.upper()} throughput, {self.config.concurrency} clients", figures, "req/s")

    def _interleaved(self, order: list[Target], kind: str, measure: Callable[[httpx.Client, Session], float],
                     count: int) -> dict[str, list[float]]:
        """`count` samples per target, taken BLOCK at a time from each target in turn."""
        samples: dict[str, list[float]] = {t.name: [] for t in order}
        for target in order:
            prime(self.clients[target.name].sequential, self.clients[target.name].sessions[kind])
        for start in range(0, count, BLOCK):
            for target in order:
                c = self.clients[target.name]
                samples[target.name] += [measure(c.sequential, c.sessions[kind]) for _ in range(min(BLOCK, count - start))]
        return samples

    def _progress(self, label: str, what: str, figures: dict[str, float], unit: str) -> None:
        shown = "  ".join(f"{t.name} {figures[t.name]:8.2f}" for t in self.targets)
        progress(f"{label}  {what:38} {shown}  {unit}")

    def median(self, key: str, target: str) -> float:
        return statistics.median(self.results[key][target])

    def ratio(self, key: str, target: str, baseline: str) -> float:
        """The median over rounds of the ratio within each round: the targets of one round were
        measured moments apart, so their ratio is less exposed to slow drifts of the machine."""
        return statistics.median(a / b for a, b in zip(self.results[key][target], self.results[key][baseline],
                                                        strict=True))


# --- the report ---------------------------------------------------------------------------------


def verdict(ratio: float, target: float, higher_is_better: bool) -> str:
    ok = ratio >= target if higher_is_better else ratio <= target
    return f"{'>=' if higher_is_better else '<='} {target:.2f}x  {'PASS' if ok else 'MISS'}"


TARGETS = {  # metric -> (target ratio gateway/mitmdump, higher is better)
    "json.median": (LATENCY_TARGET, False),
    "sse.median": (LATENCY_TARGET, False),
    "first_event": (TTFE_TARGET, False),
    "json.rps": (THROUGHPUT_TARGET, True),
    "sse.rps": (THROUGHPUT_TARGET, True),
}


LABEL = 46  # width of the first column of the report


def report(bench: Benchmark, features: str, elapsed: float) -> None:
    names = [t.name for t in bench.targets]
    print()
    print(f"MCP gateway benchmark (mitmproxy {mitmdump_version()}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, {elapsed:.0f}s)")
    print(f"  {bench.config.describe()}")
    print(f"  gateway policy: {FEATURES[features]}")
    if bench.config.baseline:
        print(f"  baseline: the gateway at revision {bench.config.baseline}, same policy")
    if bench.config.oauth:
        print("  oauth: the same routes and ACL, the caller a JWT (JWKS, audience_required) mapped to the same "
              "consumer, the token exchanged (RFC 8693, cached) for the upstream's, one claim header; every target "
              "gets the token")
    print("  mitmdump: no addon, --set stream_large_bodies=1; buffered: mitmdump holding request bodies "
          "(scripts/bench_buffered_addon.py);")
    print("  all mitmdumps: termlog_verbosity=warn, flow_detail=0")
    print()
    print(f"{'median over rounds':{LABEL}}" + "".join(f"{n:>12}" for n in names))
    for key, label, unit in METRICS:
        print(f"{label + ' (' + unit + ')':{LABEL}}" + "".join(f"{bench.median(key, n):12.2f}" for n in names))
    print()
    print(f"{'ratios (median of per-round ratios)':{LABEL}}{'gateway/mitmdump':>18}{'mitmdump/direct':>18}"
          f"{'buffered/mitmdump':>19}{'gateway/buffered':>18}"
          + (f"{'gateway/baseline':>18}" if "baseline" in names else "")
          + (f"{'traced/gateway':>16}{'control/gateway':>17}" if "traced" in names else "")
          + (f"{'oauth/gateway':>15}" if "oauth" in names else "") + "   target for gateway/mitmdump")
    for key, label, _ in METRICS:
        gateway = bench.ratio(key, "gateway", "mitmdump")
        bare = bench.ratio(key, "mitmdump", "direct")
        buffering = bench.ratio(key, "buffered", "mitmdump")
        own = bench.ratio(key, "gateway", "buffered")
        target = verdict(gateway, *TARGETS[key]) if key in TARGETS else "(none)"
        change = f"{bench.ratio(key, 'gateway', 'baseline'):17.3f}x" if "baseline" in names else ""
        change += f"{bench.ratio(key, 'traced', 'gateway'):15.3f}x{bench.ratio(key, 'control', 'gateway'):16.3f}x" \
            if "traced" in names else ""
        change += f"{bench.ratio(key, 'oauth', 'gateway'):14.3f}x" if "oauth" in names else ""
        print(f"{'ratio ' + label:{LABEL}}{gateway:17.3f}x{bare:17.3f}x{buffering:18.3f}x{own:17.3f}x{change}   {target}")
    print()
    print("buffered/mitmdump is what holding each request until its body is complete costs by itself: mitmproxy")
    print("then runs its `request` hook before forwarding instead of while the upstream works. gateway/buffered")
    print("is the gateway's own work on top of that.")
    floor_report(bench)
    cpu_report(bench)


TRACING_TARGET = 1.05  # traced/gateway process CPU per call, at most (issue 17)


def cpu_report(bench: Benchmark) -> None:
    """What each process spends per call: CPU time, unlike latency, hardly depends on what else
    the machine runs, so on a shared machine this is the figure that shows a feature's cost."""
    cpu = bench.results["cpu"]
    print()
    print(f"{'process CPU per call (ms), median over rounds':{LABEL}}" + "".join(f"{n:>12}" for n in cpu))
    print(f"{'':{LABEL}}" + "".join(f"{bench.median('cpu', n):12.3f}" for n in cpu))
    pairs = [(a, b) for a, b in (("gateway", "mitmdump"), ("gateway", "baseline"), ("traced", "gateway"),
                                 ("control", "gateway"), ("oauth", "gateway")) if a in cpu and b in cpu]
    for a, b in pairs:
        ratios = sorted(x / y for x, y in zip(cpu[a], cpu[b], strict=True))
        goal = f"   {verdict(bench.ratio('cpu', a, b), TRACING_TARGET, False)}" if (a, b) == ("traced", "gateway") else ""
        print(f"{'ratio CPU ' + a + '/' + b:{LABEL}}{bench.ratio('cpu', a, b):17.3f}x   "
              f"(rounds {ratios[0]:.3f}x to {ratios[-1]:.3f}x){goal}")
    print("Per call: every call of a round (latency series, first events, throughput runs) over the process's")
    print("user + system CPU time in that round, all threads (a traced gateway's export threads included).")
    if "control" in cpu:
        print("control is a second, identical gateway: control/gateway is what separates two like processes in")
        print("this run (memory layout, the cores they got), so a traced/gateway within that distance of 1.05x")
        print("does not settle the target either way.")


FLOOR_TARGETS = {  # (target, metric) -> the most x/buffered may be: the gateway's own work over the held floor
    ("seed", "json.median"): 1.03, ("seed", "json.p99"): 1.10, ("open", "json.median"): 1.01,
}


def floor_report(bench: Benchmark) -> None:
    """Each gateway case over the held floor ("buffered"): open route, key-auth + ACL, seed recipe."""
    cases = [n for n in ("open", "gateway", "seed") if n in {t.name for t in bench.targets}]
    print()
    print(f"{'own work over the floor (x/buffered)':{LABEL}}" + "".join(f"{n + '/buffered':>18}" for n in cases)
          + "   targets")
    for key, label, _ in METRICS:
        goals = [f"{n} <= {FLOOR_TARGETS[n, key]:.2f}x  "
                 f"{'PASS' if bench.ratio(key, n, 'buffered') <= FLOOR_TARGETS[n, key] else 'MISS'}"
                 for n in cases if (n, key) in FLOOR_TARGETS]
        print(f"{'ratio ' + label:{LABEL}}" + "".join(f"{bench.ratio(key, n, 'buffered'):17.3f}x" for n in cases)
              + ("   " + "; ".join(goals) if goals else ""))
    print("open: one open route, no plugin; gateway: the policy above; seed: the seed recipe's decK file")
    print("(tests/data/kong-recipe.yaml via scripts/bench_cases.py: datakit challenge, key-auth, tool ACL with")
    print("payload logging, cors). Ratios within one interleaved run compare; absolute figures on a shared machine do not.")
    print("The gateway dispatches mitmproxy's events without visiting addons that have nothing for them")
    print("(addons/mcpgw/mitm_dispatch.py), which `buffered` does not: these ratios include what that saves")
    print("mitmproxy itself. scripts/bench_floor.py --dispatch measures against a floor with the same dispatch.")


def filtering_benchmark(repeat: int) -> bool:
    """Run scripts/bench_filter.py's benchmark and print its ratios; False if it failed to run."""
    print()
    if repeat == 0:
        print("tools/list filtering: skipped (--no-filter)")
        return True
    try:
        import bench_filter
    except ModuleNotFoundError as e:
        if e.name != "bench_filter":
            raise
        print("tools/list filtering: not measured, scripts/bench_filter.py is not in this tree")
        return True
    run: Callable[..., object] | None = getattr(bench_filter, "bench_filter", None)
    if run is None:
        print("tools/list filtering: not measured, scripts/bench_filter.py has no bench_filter() function")
        return True
    target = getattr(bench_filter, "TARGET_RATIO", 1.5)
    progress(f"tools/list filtering: {FILTER_TOOLS} tools, {repeat} repetitions")
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            ratios = run(tools=FILTER_TOOLS, repeat=repeat)
    except Exception as e:  # noqa: BLE001 - reported, and the exit status says it failed
        print(f"tools/list filtering: FAILED to run: {type(e).__name__}: {e}")
        return False
    finally:
        for line in captured.getvalue().splitlines():
            progress(f"  {line}")
    if isinstance(ratios, (int, float)):
        ratios = {"": ratios}
    print(f"{f'tools/list filtering, {FILTER_TOOLS} tools':{LABEL}}{'filter/(loads+dumps)':>20}{'':16}   target")
    for who, ratio in dict(ratios).items():
        label = "ratio tools/list filtering" + (f", {who}" if who else "")
        print(f"{label:{LABEL}}{ratio:19.3f}x{'':16}   {verdict(ratio, target, False)}")
    return True


def integrity_benchmark(repeat: int) -> bool:
    """Run scripts/bench_integrity.py (tool pinning + description and secret scanning on a
    1,000-tool tools/list and a 1 MB result, against the same gateway without them); False if it
    failed to run."""
    print()
    if repeat == 0:
        print("tool integrity: skipped (--no-filter)")
        return True
    try:
        import bench_integrity
    except ModuleNotFoundError as e:
        if e.name != "bench_integrity":
            raise
        print("tool integrity: not measured, scripts/bench_integrity.py is not in this tree")
        return True
    progress("tool integrity: a 1,000-tool list and a 1 MB result, with and without integrity")
    try:
        bench_integrity.end_to_end(max(10, repeat))
    except Exception as e:  # noqa: BLE001 - reported, and the exit status says it failed
        print(f"tool integrity: FAILED to run: {type(e).__name__}: {e}")
        return False
    return True


# --- main ---------------------------------------------------------------------------------------


def _terminate(_signum: int, frame: FrameType | None) -> None:
    """SIGTERM: stop as on Ctrl-C (through asyncio's SIGINT handler while a throughput run is
    going, so that its tasks are cancelled rather than abandoned)."""
    handler = signal.getsignal(signal.SIGINT)
    (handler if callable(handler) else signal.default_int_handler)(signal.SIGINT, frame)


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    if not MITMDUMP.exists():
        progress(f"error: {MITMDUMP} not found; run this with the venv's Python (scripts/bench does)")
        return 1
    signal.signal(signal.SIGTERM, _terminate)  # stop the processes on SIGTERM too
    started = time.monotonic()
    progress(f"benchmark: {config.describe()}")
    try:
        with tempfile.TemporaryDirectory(prefix="mcpgw-bench-") as tmp, \
                started_targets(Path(tmp), config.baseline, config.telemetry, config.oauth) as (targets, features), \
                asyncio.Runner() as runner, contextlib.ExitStack() as stack:
            progress(f"started: demo upstreams, mitmdump and the gateway ({features} policy) "
                     f"in {time.monotonic() - started:.1f}s")
            bench = Benchmark(config, targets, runner, stack)
            bench.warm_up()
            for round_index in range(config.rounds):
                bench.run_round(round_index)
        report(bench, features, time.monotonic() - started)
        ok = filtering_benchmark(config.filter_repeat)
        ok = integrity_benchmark(config.filter_repeat) and ok
        if config.llm:
            import bench_llm  # scripts/, beside this file

            ok = bench_llm.main(["--rounds", str(config.rounds), "--samples", str(max(5, config.requests // 10))]) == 0 and ok
        if config.limits:
            import bench_limits  # scripts/, beside this file

            ok = bench_limits.main(["--rounds", str(config.rounds), "--requests", str(max(60, config.requests))]) == 0 and ok
        if config.rest_tools:
            import bench_rest_tools  # scripts/, beside this file

            ok = bench_rest_tools.main(["--rounds", str(config.rounds), "--samples", str(max(20, config.requests // 4)),
                                        *(["--baseline", config.baseline] if config.baseline else [])]) == 0 and ok
    except BenchError as e:
        progress(f"error: {e}")
        return 1
    except httpx.HTTPError as e:
        progress(f"error: {type(e).__name__} talking to {e.request.url if e.request else '?'}: {e}")
        return 1
    except KeyboardInterrupt:
        progress("interrupted; all processes stopped")
        return 130
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
