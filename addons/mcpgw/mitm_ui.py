"""What the gateway adds to mitmproxy's console and mitmweb: the "MCP" content view, the
`mcp.policy` / `mcp.explain` commands, and the URL shown for the flows the gateway answers itself.

The content view shows a JSON-RPC body (a message, a batch, or an SSE stream of messages) as one
block per message, each headed by what a person looks for first:

    # [2] tools/call push_files -> error -32602 · id 3
    # Tool 'push_files' is not available for consumer group 'developer'
    {
      "jsonrpc": "2.0",
      ...

mitmproxy picks it automatically for JSON and SSE bodies that hold JSON-RPC messages. Streamed
responses (SSE) keep no body unless mitmproxy's `store_streamed_bodies` option is on."""

from __future__ import annotations

import json
import logging
from typing import Any

from mitmproxy import command, contentviews, exceptions, http
from mitmproxy.contentviews import Contentview, Metadata
from mitmproxy.net.http import url
from mitmproxy.proxy.mode_specs import ReverseMode

from . import context, redaction, report
from .integrity import explain as integrity_explain
from .policy.store import PolicyStore
from .protocol.sse import SSEParser

log = logging.getLogger("mcpgw.ui")

_LIST_MEMBERS = {"tools": "name", "prompts": "name", "resources": "uri", "resourceTemplates": "uriTemplate"}
_SHOWN_NAMES = 12


def _is_jsonrpc(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("jsonrpc") == "2.0" and ("method" in obj or "result" in obj or "error" in obj)


def _messages_of(doc: Any) -> list[dict]:
    items = doc if isinstance(doc, list) else [doc]
    return [m for m in items if _is_jsonrpc(m)]


def _blocks(data: bytes, content_type: str | None) -> list[tuple[str | None, Any]]:
    """(SSE label or None, JSON-RPC message or raw SSE event) in body order. Empty when the body
    holds no JSON-RPC message at all."""
    if content_type == "text/event-stream":
        parser = SSEParser()
        blocks: list[tuple[str | None, Any]] = []
        found = False
        for ev in parser.feed(data) + parser.flush():
            label = " · ".join(x for x in (f"event {ev.event}" if ev.event else "", f"event id {ev.id}" if ev.id else "") if x)
            try:
                msgs = _messages_of(json.loads(ev.data)) if ev.data else []
            except ValueError:
                msgs = []
            if msgs:
                found = True
                blocks.extend((label or None, m) for m in msgs)
            elif ev.data is not None or ev.comments:
                blocks.append((label or None, ev))
        return blocks if found else []
    if content_type in (None, "application/json"):
        try:
            return [(None, m) for m in _messages_of(json.loads(data))]
        except ValueError:
            return []
    return []


def _request_index(metadata: Metadata) -> dict[Any, dict]:
    """The client's requests in this flow by id, so a response can be headed by its method."""
    flow = metadata.flow
    if not isinstance(flow, http.HTTPFlow) or metadata.http_message is flow.request:
        return {}
    try:
        doc = json.loads(flow.request.get_content(strict=False) or b"")
    except ValueError:
        return {}
    return {m["id"]: m for m in _messages_of(doc) if "method" in m and "id" in m}


def _target(msg: dict) -> str:
    params = msg.get("params")
    if not isinstance(params, dict):
        return ""
    for key in ("name", "uri"):
        if isinstance(params.get(key), str):
            return " " + params[key]
    return ""


def _headline(msg: dict, requests: dict[Any, dict]) -> tuple[str, list[str]]:
    """The block's first line, and notes under it (an error's text, the names in a list)."""
    ident = f" · id {json.dumps(msg['id'])}" if "id" in msg else ""
    if "method" in msg:
        kind = "request" if "id" in msg else "notification"
        return f"{msg['method']}{_target(msg)}{ident} · {kind}", []
    origin = requests.get(msg.get("id"))
    what = f"{origin['method']}{_target(origin)} -> " if origin else ""
    error = msg.get("error")
    if isinstance(error, dict):
        return f"{what}error {error.get('code')}{ident}", [str(error.get("message", ""))]
    notes = []
    result = msg.get("result")
    if isinstance(result, dict):
        for array, member in _LIST_MEMBERS.items():
            entries = result.get(array)
            if isinstance(entries, list):
                names = [str(e.get(member)) for e in entries if isinstance(e, dict)]
                more = f", ... ({len(names)} in all)" if len(names) > _SHOWN_NAMES else ""
                notes.append(f"{len(names)} {array}: {', '.join(names[:_SHOWN_NAMES])}{more}")
        if result.get("isError") is True:
            notes.append("the tool reported an error (isError)")
    return f"{what}result{ident}", notes


def _comment(text: str) -> str:
    return "\n".join("# " + line for line in text.splitlines() or [""])


class MCPContentview(Contentview):
    """JSON-RPC messages of MCP traffic, one block per message."""

    syntax_highlight = "yaml"  # JSON is YAML, and the headlines are YAML comments

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        blocks = _blocks(data, metadata.content_type)
        if not blocks:
            raise ValueError("no JSON-RPC message in this body")
        requests = _request_index(metadata)
        out = []
        for number, (label, item) in enumerate(blocks, start=1):
            where = f" · {label}" if label else ""
            if isinstance(item, dict):
                headline, notes = _headline(item, requests)
                text = [_comment(f"[{number}] {headline}{where}")] + [_comment(n) for n in notes if n]
                text.append(json.dumps(item, indent=2, ensure_ascii=False))
            else:  # an SSE event without a JSON-RPC message: endpoint, keep-alive, resumption point
                kind = "SSE event, not JSON-RPC" if item.data else "SSE comment" if item.comments else "empty SSE event"
                text = [_comment(f"[{number}] {kind}{where}")]
                text += [_comment(":" + c) for c in item.comments]
                if item.data:
                    text.append(_comment(item.data))
            out.append("\n".join(text))
        return "\n\n".join(out) + "\n"

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        if not data or metadata.content_type not in ("application/json", "text/event-stream"):
            return -1
        # Above the JSON view (1) for MCP bodies; never chosen for anything else.
        return 2 if _blocks(data, metadata.content_type) else -1


class MCPConsole:
    """The gateway's commands for mitmproxy's console and mitmweb, and its content view."""

    def __init__(self, store: PolicyStore):
        self.store = store

    def load(self, loader) -> None:
        # The registry keys views by name: after a script reload this replaces the previous
        # module's view instead of adding a second one.
        contentviews.add(MCPContentview)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # A child addon: runs after the gateway's own hook, once the flow is answered or forwarded.
        show_gateway_target(flow)

    @command.command("mcp.policy")
    def policy(self) -> str:
        """Summary of the active policy: routes, ACL rules, consumers, groups and its SHA-256."""
        snap = self.store.current
        if snap is None:
            return "no active policy"
        return redaction.redact(report.policy_summary(snap.policy, source=snap.source, digest=snap.digest,
                                                      version=snap.version))

    @command.command("mcp.explain")
    def explain(self, consumer: str, tool: str, route: str = "") -> str:
        """Would CONSUMER (username, id, custom_id or group:NAME) be allowed to call TOOL, on ROUTE
        or on every route? Answers with the rule that decides, as the gateway would."""
        snap = self.store.current
        if snap is None:
            return "no active policy"
        try:
            identity, answers = report.explain_tool(snap.policy, consumer, tool, route or None)
        except (report.UnknownCaller, KeyError) as e:
            raise exceptions.CommandError(e.args[0]) from None
        # and whether the tool itself is held back (docs/integrity.md)
        return "\n".join([*(a.line(identity, tool) for a in answers), *integrity_explain.lines(snap, tool, route or None)])


_DEFAULT_PORTS = {"http": 80, "https": 443}


def show_gateway_target(flow: http.HTTPFlow) -> None:
    """Gateway mode: a flow the gateway answered itself (a refusal, a served PRM) still names the
    listener's nominal reverse target, a placeholder such as http://127.0.0.1:9 that means nothing
    to whoever inspects the refusal. Name the gateway instead, as the client reached it: the Host
    it sent on a governed flow (checked against the public hosts), the listener's own address on
    any other. Forwarded flows keep their upstream.

    Only the display fields change (scheme, host, port; not the Host header, nor the path the
    client sent). Nothing is forwarded for such a flow: it has its answer, and the gateway's
    `upstream_set` stays unset. A replay of it goes through the gateway's hooks like any request."""
    if flow.response is None or not isinstance(flow.client_conn.proxy_mode, ReverseMode):
        return
    fctx = context.get(flow)
    if fctx is not None and (fctx.upstream_set or fctx.mode != "gateway"):
        return
    request = flow.request
    scheme = "https" if flow.client_conn.tls_established else "http"
    host, port = None, None
    if fctx is not None and fctx.client_host:
        try:
            host, port = url.parse_authority(fctx.client_host, check=True)
        except ValueError:
            host = None
    if host is None:
        sockname = flow.client_conn.sockname
        if not sockname or not sockname[0]:
            return
        host, port = sockname[0], sockname[1]
    request.scheme = scheme
    request.data.host = host
    request.data.port = port or _DEFAULT_PORTS[scheme]
