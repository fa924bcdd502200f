"""A small MCP client for trying the gateway: connects with the official MCP SDK, lists the tools
it is allowed to see, and optionally calls one. It says whether the answers came through the
gateway (the demo policy's X-MCP-Gateway-Route header) or not.

    .venv/bin/python scripts/demo_client.py --url http://localhost:8443/github-mcp --key dev-api-key
    .venv/bin/python scripts/demo_client.py --key dev-api-key --call push_files
    .venv/bin/python scripts/demo_client.py --url http://127.0.0.1:8931/mcp --proxy http://127.0.0.1:8080 --key dev-api-key
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

DEFAULT_ARGS = {"search_repositories": {"query": "kong gateway language:go"},
                "push_files": {"owner": "octocat", "repo": "hello-world", "branch": "main",
                               "files": [{"path": "README.md", "content": "hi"}], "message": "demo"}}


async def run(args: argparse.Namespace) -> int:
    headers = {}
    if args.key:
        headers["apikey"] = args.key
    if args.bearer:
        headers["Authorization"] = f"Bearer {args.bearer}"
    routes: set[str] = set()

    async def note_route(response: httpx.Response) -> None:
        if "x-mcp-gateway-route" in response.headers:
            routes.add(response.headers["x-mcp-gateway-route"])

    # The SDK's own timeouts; trust_env=False: only --proxy decides whether a proxy is used.
    client = httpx.AsyncClient(headers=headers, proxy=args.proxy, trust_env=False, follow_redirects=True,
                               timeout=httpx.Timeout(30, read=300), event_hooks={"response": [note_route]})
    async with client, streamable_http_client(args.url, http_client=client) as (read, write, _):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            print(f"connected to {init.serverInfo.name} (protocol {init.protocolVersion})")
            if routes:
                print(f"through the MCP gateway: route {', '.join(sorted(routes))} (X-MCP-Gateway-Route)")
            else:
                print("warning: not through the MCP gateway (no X-MCP-Gateway-Route header in its answer)")
            tools = (await session.list_tools()).tools
            print(f"{len(tools)} tools visible: {', '.join(t.name for t in tools[:12])}{' ...' if len(tools) > 12 else ''}")
            if args.call:
                arguments = json.loads(args.arguments) if args.arguments else DEFAULT_ARGS.get(args.call, {})
                try:
                    result = await session.call_tool(args.call, arguments)
                except McpError as e:
                    print(f"{args.call}: refused: {e.error.message} (code {e.error.code})")
                    return 2
                text = " ".join(c.text for c in result.content if getattr(c, "text", None))
                print(f"{args.call}: {'error: ' if result.isError else ''}{text[:300]}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://localhost:8443/github-mcp", help="MCP endpoint (default: %(default)s)")
    parser.add_argument("--key", help="API key sent as the apikey header")
    parser.add_argument("--bearer", default="demo-user-token",
                        help="bearer token sent as Authorization (the demo upstream accepts any; default: %(default)s)")
    parser.add_argument("--proxy", metavar="URL", help="send every request through this HTTP proxy (the gateway's "
                        "intercept listener, e.g. http://127.0.0.1:8080); without it, no proxy is used")
    parser.add_argument("--call", metavar="TOOL", help="call this tool after listing")
    parser.add_argument("--arguments", metavar="JSON", help="tool arguments as JSON (defaults exist for a few tools)")
    args = parser.parse_args()
    try:
        sys.exit(asyncio.run(run(args)))
    except* Exception as group:  # the SDK reports HTTP errors from inside its task group
        for exc in group.exceptions:
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
