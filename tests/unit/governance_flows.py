"""Building governed flows for the governance unit tests: a policy, a FlowContext on its route
and a mitmproxy test flow carrying a JSON-RPC body, run through the real request phases."""

from __future__ import annotations

import json
from typing import Any

from mitmproxy import http
from mitmproxy.test import tflow

from mcpgw import context, inbound
from mcpgw.context import FlowContext
from mcpgw.governance.enforce import enforce_acl
from mcpgw.governance.removed import refuse_removed_methods
from mcpgw.identity.consumers import Identity
from mcpgw.policy.models import Policy
from mcpgw.policy.store import Snapshot
from mcpgw.routing import RouteTable

DEV = Identity("dev-user", groups=("developer",))
ADMIN = Identity("admin-user", groups=("admin",))
READ_TOOLS = ["search_repositories", "get_file_contents", "list_issues", "list_pull_requests", "search_users",
              "search_code"]
WRITE_TOOLS = ["create_issue", "push_files", "create_pull_request", "merge_pull_request", "create_repository"]
RECIPE_ACL: dict[str, Any] = {
    "consumer_identifier": "username",
    "include_consumer_groups": True,
    "default_acl": [{"deny": ["developer"], "scope": "tools"}],
    "tools": [*({"name": t, "acl": {"allow": ["admin", "developer"]}} for t in READ_TOOLS),
              *({"name": t, "acl": {"allow": ["admin"]}} for t in WRITE_TOOLS)],
}
STREAMABLE = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
LEGACY = {"Accept": "*/*", "Content-Type": "application/json"}


def snapshot(acl: dict[str, Any] | None = None, version: int = 1) -> Snapshot:
    policy = Policy.model_validate({
        "consumer_groups": ["admin", "developer"],
        "consumers": {"dev-user": {"groups": ["developer"]}, "admin-user": {"groups": ["admin"]}, "eason": {}},
        "services": {"gh": {"url": "http://127.0.0.1:1/mcp"}},
        "routes": {"gh": {"service": "gh", "paths": ["/gh"], **({"acl": acl} if acl is not None else {})}},
    })
    return Snapshot(policy, RouteTable(policy), "digest", version, "test", ())


def request(snap: Snapshot, body: Any, identity: Identity | None = DEV, *,
            headers: dict[str, str] | list[tuple[str, str]] | None = None,
            method: str = "POST") -> tuple[FlowContext, http.HTTPFlow, http.Response | None]:
    """Run inbound parsing and the governance phases on a request; return what they answered."""
    flow = tflow.tflow()
    flow.request.method = method
    flow.request.path = "/gh"
    flow.request.headers.clear()
    headers = STREAMABLE if headers is None else headers
    for name, value in headers.items() if isinstance(headers, dict) else headers:
        flow.request.headers.add(name, value)
    if isinstance(body, bytes):
        flow.request.content = body
    else:
        flow.request.content = b"" if body is None else json.dumps(body).encode()
    ctx = context.attach(flow, FlowContext(snap, "gateway", snap.routes.match_gateway("/gh")))
    ctx.identity = identity
    answer = inbound.parse_client_messages(ctx, flow) or refuse_removed_methods(ctx, flow) or enforce_acl(ctx, flow)
    return ctx, flow, answer


def call(name: Any, id: Any = 1, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": {}, **params}}


def rpc(method: str, params: Any = None, id: Any = 1) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if id is not None:
        msg["id"] = id
    if params is not None:
        msg["params"] = params
    return msg


def body(resp: http.Response) -> Any:
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        return [json.loads(line[5:]) for line in resp.get_text().splitlines() if line.startswith("data:")]
    return json.loads(resp.get_content())


def tool(name: str) -> dict[str, Any]:
    return {"name": name, "description": f"The {name} tool", "inputSchema": {"type": "object", "properties": {}}}
