"""The self-contained demo behind `scripts/gateway` with no arguments (or with only these options):
the demo upstream (a GitHub-like MCP server) on 127.0.0.1:8931, the demo OpenAI-compatible LLM
provider on 127.0.0.1:8932, and the gateway in front of them with policies/demo.yaml, in gateway
mode on :8443 and intercept mode on :8080, every listener on 127.0.0.1 unless --host says
otherwise. Ctrl-C stops them all."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO_UPSTREAM_PORT = 8931  # the ports policies/demo.yaml names
DEMO_GATEWAY_PORT = 8443
DEMO_LLM_PORT = 8932
BIN = Path(sys.executable).parent
BEARER = "demo-user-token"  # the demo upstream accepts any bearer token
INIT = ('{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18",'
        '"capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}')


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_listening(host: str, port: int, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    target = "127.0.0.1" if is_wildcard(host) else host
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"error: {what} exited with status {proc.returncode}")
        with socket.socket(socket.AF_INET6 if ":" in target else socket.AF_INET) as s:
            if s.connect_ex((target, port)) == 0:
                return
        time.sleep(0.1)
    sys.exit(f"error: {what} did not start listening on port {port} within {timeout:.0f}s")


def is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")  # what the gateway serves without mcp_public_hosts


def plain_keys(policy_path: Path) -> list[tuple[str, list[str], list[str]]]:
    """(username, groups, keys written in plain text) from the demo policy, for the banner."""
    data = yaml.safe_load(policy_path.read_text()) or {}
    out = []
    for name, c in (data.get("consumers") or {}).items():
        keys = [k for k in c.get("keys", []) if isinstance(k, str) and not k.startswith(("{", "sha256:"))]
        out.append((name, c.get("groups", []), keys))
    return out


def blocks(policy_path: Path) -> bool:
    data = yaml.safe_load(policy_path.read_text()) or {}
    return (data.get("gateway") or {}).get("intercept_unmatched") == "block"


def shown_path(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def public_host(host: str) -> str:
    """The host clients put in gateway URLs: localhost for the default and every-interface listeners."""
    return "localhost" if host in ("127.0.0.1", "localhost") or is_wildcard(host) else bracketed(host)


def proxy_host(host: str) -> str:
    """The address clients reach the listeners at."""
    return "127.0.0.1" if is_wildcard(host) else bracketed(host)


def curl(url: str, key: str, proxy: str | None = None) -> str:
    via = f"-x {proxy} " if proxy else ""
    return (f"curl -si {via}{url} -H 'apikey: {key}' -H 'Authorization: Bearer {BEARER}' "
            "-H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' "
            f"-d {shlex.quote(INIT)}")


def banner(args: argparse.Namespace, policy: Path, source: Path) -> str:
    gw = f"http://{public_host(args.host)}:{args.port}"
    proxy = f"http://{proxy_host(args.host)}:{args.proxy_port}"
    upstream = f"http://127.0.0.1:{args.upstream_port}/mcp"
    where = "127.0.0.1 only" if args.host == "127.0.0.1" else \
        "every interface" if is_wildcard(args.host) else args.host
    edited = shown_path(policy) if policy == source else \
        f"{shown_path(policy)} (a copy of {shown_path(source)} for these ports)"
    lines = [
        "",
        f"MCP gateway demo is running (listening on {where}; --host to change)",
        f"  gateway mode:    {gw}/github-mcp          (streamable HTTP)",
        f"                   {gw}/github-legacy/sse   (legacy HTTP+SSE)",
        f"  intercept mode:  proxy {proxy} for the upstream's own URL {upstream}",
        "                   (plain http: HTTP_PROXY or curl -x; HTTPS_PROXY is not used for http:// URLs;",
        "                   the proxy refuses every destination the policy does not govern)" if blocks(policy) else
        "                   other destinations pass through: this policy has intercept_unmatched: pass)",
        f"  upstream:        {upstream} (a GitHub-like MCP server with 100+ tools; on 127.0.0.1 only)",
        f"  policy:          {edited}",
        "                   edit it: changes apply within a second",
    ]
    consumers = plain_keys(policy)
    if consumers:
        lines.append("  consumers:")
        lines += [f"    {name:<12} groups {', '.join(groups) or '-':<12} key {', '.join(keys) or '(not shown)'}"
                  for name, groups, keys in consumers]
    keyed = sorted(((name, keys[0]) for name, _, keys in consumers if keys), key=lambda nk: "dev" not in nk[0])
    dev_key = keyed[0][1] if keyed else "dev-api-key"
    headers = f'{{"apikey": "{dev_key}", "Authorization": "Bearer {BEARER}"}}'
    client = ".venv/bin/python scripts/demo_client.py"
    lines += ["",
              "Every call on /github-mcp needs two headers: apikey (who you are to the gateway) and",
              "Authorization: Bearer <token> (your own token for the upstream, passed through to it; the demo",
              f"upstream accepts any, e.g. {BEARER}). Without Authorization the gateway answers 401 and says so.",
              "",
              "Try it (in another terminal, from the project directory): each consumer sees the tools its",
              "groups may use, and push_files is refused for developers before it reaches the upstream"]
    lines += [f"  {client} --url {gw}/github-mcp --key {key} --call push_files" for _, key in keyed]
    lines += ["The same through the intercept listener, to the upstream's own URL:",
              f"  {client} --url {upstream} --proxy {proxy} --key {dev_key}",
              "",
              "curl (X-MCP-Gateway-Route in the answer: it came through the gateway):",
              f"  {curl(f'{gw}/github-mcp', dev_key)}",
              f"  {curl(upstream, dev_key, proxy)}",
              "",
              "TypeScript (@modelcontextprotocol/sdk):",
              f'  const transport = new StreamableHTTPClientTransport(new URL("{gw}/github-mcp"),',
              f"      {{requestInit: {{headers: {headers}}}}});",
              '  const client = new Client({name: "demo", version: "1.0.0"});',
              "  await client.connect(transport);",
              "Python (mcp):",
              f"  http = httpx.AsyncClient(headers={headers}, timeout=30)",
              f'  async with streamable_http_client("{gw}/github-mcp", http_client=http) as (read, write, _): ...']
    lines += ["",
              f"LLM route {gw}/openai (the demo provider on 127.0.0.1:{args.llm_port}; the gateway injects its key):",
              "the provider calls the MCP server named in the request itself; the gateway gives it only the",
              "tools the caller may call there. Python (openai), as dev-user:",
              f'  client = openai.OpenAI(base_url="{gw}/openai", api_key="unused", default_headers={{"apikey": "{dev_key}"}})',
              '  answer = client.responses.create(model="demo-model", input=\'call search_repositories {"query": "mcp"}\', tools=[{',
              f'      "type": "mcp", "server_label": "github", "server_url": "{upstream}", "require_approval": "never",',
              f'      "headers": {{"Authorization": "Bearer {BEARER}"}}}}])',
              "  print([(i.type, len(getattr(i, 'tools', []) or [])) for i in answer.output], answer.output_text)"]
    if args.tool == "mitmweb":
        lines += ["", f"Inspect the flows in mitmweb: http://{proxy_host(args.host)}:{args.web_port}, with the ?token=",
                  "from mitmweb's own line 'Web server listening at ...' (mitmweb asks for it)"]
    lines += ["", "Press Ctrl-C to stop.", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/gateway [mitmweb]", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tool", choices=["mitmdump", "mitmweb"], default="mitmdump", help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address the gateway's listeners (and mitmweb's UI) bind to; 0.0.0.0 for every "
                             "interface (default: %(default)s). The demo upstream stays on 127.0.0.1")
    ports = (("--port", DEMO_GATEWAY_PORT, "gateway (reverse) listener"),
             ("--proxy-port", 8080, "intercept (regular proxy) listener"),
             ("--upstream-port", DEMO_UPSTREAM_PORT, "demo upstream"),
             ("--llm-port", DEMO_LLM_PORT, "demo LLM provider (OpenAI-compatible)"),
             ("--web-port", 8081, "mitmweb's UI, with mitmweb"))
    for option, default, what in ports:
        parser.add_argument(option, type=int, metavar="PORT", default=default, help=f"{what} (default: %(default)s)")
    parser.add_argument("--policy", type=Path, metavar="FILE", default=ROOT / "policies" / "demo.yaml",
                        help="policy file (default: policies/demo.yaml)")
    return parser.parse_args(argv)


def check_ports(args: argparse.Namespace) -> None:
    listeners = [(args.upstream_port, "127.0.0.1", "the demo upstream", "--upstream-port"),
                 (args.llm_port, "127.0.0.1", "the demo LLM provider", "--llm-port"),
                 (args.port, args.host, "the gateway", "--port"),
                 (args.proxy_port, args.host, "the intercept proxy", "--proxy-port")]
    if args.tool == "mitmweb":
        listeners.append((args.web_port, args.host, "mitmweb's UI", "--web-port"))
    seen: dict[int, str] = {}
    for port, host, what, option in listeners:
        if port in seen:
            sys.exit(f"error: {what} and {seen[port]} cannot share port {port}: choose another with {option} PORT")
        seen[port] = what
        if not port_free(host, port):
            sys.exit(f"error: port {port} ({what}) is in use on {host}: stop what uses it, or choose another "
                     f"with {option} PORT (scripts/gateway {option} PORT)")


def policy_for(args: argparse.Namespace, source: Path) -> Path:
    """The demo policy names the default ports; for others the gateway loads a copy that names them."""
    if args.upstream_port == DEMO_UPSTREAM_PORT and args.port == DEMO_GATEWAY_PORT and args.llm_port == DEMO_LLM_PORT:
        return source
    text = source.read_text().replace(f"127.0.0.1:{DEMO_UPSTREAM_PORT}", f"127.0.0.1:{args.upstream_port}")
    text = text.replace(f"127.0.0.1:{DEMO_LLM_PORT}", f"127.0.0.1:{args.llm_port}")
    text = text.replace(f"localhost:{DEMO_GATEWAY_PORT}", f"localhost:{args.port}")
    copy = Path(tempfile.mkdtemp(prefix="mcp-gateway-demo-")) / source.name
    copy.write_text(text)
    return copy


def gateway_command(args: argparse.Namespace, policy: Path) -> list[str]:
    bind = bracketed(args.host)
    cmd = [str(BIN / args.tool), "-s", str(ROOT / "addons" / "mcp_gateway.py"),
           "--set", f"mcp_policy={policy}",
           "--mode", f"reverse:http://127.0.0.1:{args.upstream_port}@{bind}:{args.port}",
           "--mode", f"regular@{bind}:{args.proxy_port}", "--set", "flow_detail=1"]
    if args.host not in LOOPBACK_NAMES and not is_wildcard(args.host):
        cmd += ["--set", f"mcp_public_hosts={args.host}"]  # clients reach it by that address
    if args.tool == "mitmweb":
        cmd += ["--set", "web_open_browser=false", "--set", f"web_host={args.host}",
                "--set", f"web_port={args.web_port}"]
    return cmd


def main() -> None:
    args = parse_args()
    check_ports(args)
    source = args.policy.resolve()
    policy = policy_for(args, source)
    procs: list[subprocess.Popen] = []

    def stop(*_: object) -> None:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
    try:
        upstream = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "demo_upstream.py"), "--host", "127.0.0.1",
                                     "--port", str(args.upstream_port)], stdout=subprocess.DEVNULL)
        procs.append(upstream)
        wait_listening("127.0.0.1", args.upstream_port, upstream, "the demo upstream")
        provider = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "demo_llm_provider.py"), "--host", "127.0.0.1",
                                     "--port", str(args.llm_port)], stdout=subprocess.DEVNULL)
        procs.append(provider)
        wait_listening("127.0.0.1", args.llm_port, provider, "the demo LLM provider")
        gateway = subprocess.Popen(gateway_command(args, policy), env={**os.environ, "PYTHONUNBUFFERED": "1"})
        procs.append(gateway)
        wait_listening(args.host, args.port, gateway, "the gateway")
        print(banner(args, policy, source), flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        sys.exit("error: a demo process stopped unexpectedly; see the output above")
    except KeyboardInterrupt:
        pass
    finally:
        stop()


if __name__ == "__main__":
    main()
