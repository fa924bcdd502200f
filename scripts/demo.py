"""The self-contained demo behind `scripts/gateway` with no arguments: the demo upstream (a
GitHub-like MCP server) on 127.0.0.1:8931 and the gateway in front of it with policies/demo.yaml,
in gateway mode on :8443 and intercept mode on :8080. Ctrl-C stops both."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO_UPSTREAM_PORT = 8931  # the port policies/demo.yaml names
BIN = Path(sys.executable).parent


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_listening(port: int, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"error: {what} exited with status {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    sys.exit(f"error: {what} did not start listening on port {port} within {timeout:.0f}s")


def plain_keys(policy_path: Path) -> list[tuple[str, list[str], list[str]]]:
    """(username, groups, keys written in plain text) from the demo policy, for the banner."""
    data = yaml.safe_load(policy_path.read_text()) or {}
    out = []
    for name, c in (data.get("consumers") or {}).items():
        keys = [k for k in c.get("keys", []) if isinstance(k, str) and not k.startswith(("{", "sha256:"))]
        out.append((name, c.get("groups", []), keys))
    return out


def banner(args: argparse.Namespace, policy: Path) -> str:
    gw = f"http://localhost:{args.port}"
    lines = [
        "",
        "MCP gateway demo is running",
        f"  gateway mode:    {gw}/github-mcp          (streamable HTTP)",
        f"                   {gw}/github-legacy/sse   (legacy HTTP+SSE)",
        f"  intercept mode:  HTTPS_PROXY=http://127.0.0.1:{args.proxy_port} (CA: ~/.mitmproxy/mitmproxy-ca-cert.pem)",
        f"  upstream:        http://127.0.0.1:{args.upstream_port}/mcp (a GitHub-like MCP server with 100+ tools)",
        f"  policy:          {policy.relative_to(ROOT) if policy.is_relative_to(ROOT) else policy}"
        " (edit it: changes apply within a second)",
    ]
    consumers = plain_keys(policy)
    if consumers:
        lines.append("  consumers:")
        lines += [f"    {name:<12} groups {', '.join(groups) or '-':<12} key {', '.join(keys) or '(not shown)'}"
                  for name, groups, keys in consumers]
    client = f".venv/bin/python scripts/demo_client.py --url {gw}/github-mcp"
    lines += ["", "Try it (in another terminal, from the project directory): each consumer sees the tools its",
              "groups may use, and push_files is refused for developers before it reaches the upstream"]
    keyed = [(name, keys[0]) for name, _, keys in consumers if keys]
    lines += [f"  {client} --key {key} --call push_files" for _, key in sorted(keyed, key=lambda nk: "dev" not in nk[0])]
    if not keyed:
        lines += [f"  {client}"]
    if args.tool == "mitmweb":
        lines += ["", "Inspect the flows in mitmweb: http://127.0.0.1:8081"]
    lines += ["", "Press Ctrl-C to stop.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tool", choices=["mitmdump", "mitmweb"], default="mitmdump")
    parser.add_argument("--port", type=int, default=8443, help="gateway (reverse) listener (default: %(default)s)")
    parser.add_argument("--proxy-port", type=int, default=8080, help="intercept (regular proxy) listener (default: %(default)s)")
    parser.add_argument("--upstream-port", type=int, default=DEMO_UPSTREAM_PORT, help="demo upstream port (default: %(default)s)")
    parser.add_argument("--policy", type=Path, default=ROOT / "policies" / "demo.yaml")
    args = parser.parse_args()

    for port, what in ((args.upstream_port, "demo upstream"), (args.port, "gateway"), (args.proxy_port, "intercept proxy")):
        if not port_free(port):
            sys.exit(f"error: port {port} ({what}) is in use; stop what uses it or pick another port (see --help)")

    policy = args.policy.resolve()
    if args.upstream_port != DEMO_UPSTREAM_PORT:  # the demo policy names the default port: use a copy
        copy = Path(tempfile.mkdtemp(prefix="mcp-gateway-demo-")) / policy.name
        copy.write_text(policy.read_text().replace(f"127.0.0.1:{DEMO_UPSTREAM_PORT}", f"127.0.0.1:{args.upstream_port}"))
        policy = copy
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
        upstream = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "demo_upstream.py"),
                                     "--port", str(args.upstream_port)], stdout=subprocess.DEVNULL)
        procs.append(upstream)
        wait_listening(args.upstream_port, upstream, "the demo upstream")
        cmd = [str(BIN / args.tool), "-s", str(ROOT / "addons" / "mcp_gateway.py"),
               "--set", f"mcp_policy={policy}",
               "--mode", f"reverse:http://127.0.0.1:{args.upstream_port}@{args.port}",
               "--mode", f"regular@{args.proxy_port}", "--set", "flow_detail=1"]
        if args.tool == "mitmweb":
            cmd += ["--set", "web_open_browser=false"]
        gateway = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        procs.append(gateway)
        wait_listening(args.port, gateway, "the gateway")
        print(banner(args, policy), flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        sys.exit("error: a demo process stopped unexpectedly; see the output above")
    except KeyboardInterrupt:
        pass
    finally:
        stop()


if __name__ == "__main__":
    main()
