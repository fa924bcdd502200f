"""The "LLM" content view for mitmproxy's console and mitmweb: OpenAI-compatible request and
answer bodies (Chat Completions, Responses; JSON and SSE) headed by what a person looks for
first, then the body:

    # responses request · model gpt-4o · stream
    # input: call search_repositories {"query": "mcp"}
    # tool mcp github -> https://api.githubcopilot.com/mcp/ · allowed_tools 6: get_file_contents, ...

    # response · completed · model gpt-4o · usage 12 + 30 = 42 tokens
    # mcp_list_tools github: 6 tools: get_file_contents, ...
    # mcp_call search_repositories on github: completed

A stream is shown as its summary (event count, the text it carried, its usage), then one line
per event. It is picked for bodies of the two endpoints that have that shape, above the JSON
view; the text passes the gateway's secret masking (a tool's headers may hold a stored
credential). Streamed answers keep no body unless mitmproxy's `store_streamed_bodies` is on."""

from __future__ import annotations

import json
from typing import Any

from mitmproxy import http
from mitmproxy.contentviews import Contentview, Metadata

from .. import redaction
from ..protocol.sse import SSEParser
from . import usage as usage_mod

_ENDPOINTS = ("/chat/completions", "/responses")
_SHOWN = 12
_TEXT = 300


def _short(text: Any, limit: int = _TEXT) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[:limit] + " ..."


def _names(names: list[str]) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > _SHOWN else ""
    return f"{len(names)}: {', '.join(names[:_SHOWN])}{more}" if names else "0"


def _usage(obj: Any) -> str | None:
    u = usage_mod.parse(obj)
    return f"usage {u.prompt_tokens} + {u.completion_tokens} = {u.total_tokens} tokens" if u else None


def _is_llm_flow(metadata: Metadata) -> bool:
    flow = metadata.flow
    return isinstance(flow, http.HTTPFlow) and flow.request.path.split("?", 1)[0].rstrip("/").endswith(_ENDPOINTS)


def _content(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in value if isinstance(p, dict) and p.get("text"))
    return ""


def _request_lines(body: dict) -> list[str]:
    kind = "chat request" if "messages" in body else "responses request"
    head = [kind, f"model {body.get('model')}" if body.get("model") else "model not named"]
    if body.get("stream") is True:
        head.append("stream")
    head += [f"{k} {body[k]}" for k in ("max_tokens", "max_output_tokens", "temperature", "top_p") if k in body]
    lines = [" · ".join(head)]
    messages = body.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        lines.append(f"[{messages[-1].get('role')}] {_short(_content(messages[-1].get('content')))}")
    if "input" in body:
        value = body["input"]
        lines.append("input: " + _short(value if isinstance(value, str) else _content(
            [p for m in value if isinstance(m, dict) for p in (m.get("content") if isinstance(m.get("content"), list)
                                                                 else [{"text": m.get("content")}])]
            if isinstance(value, list) else value)))
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and tool.get("type") == "mcp":
            allowed = tool.get("allowed_tools")
            names = allowed.get("tool_names") if isinstance(allowed, dict) else allowed
            where = tool.get("server_url") or f"connector {tool.get('connector_id')}"
            lines.append(f"tool mcp {tool.get('server_label')} -> {where} · allowed_tools "
                         + (_names([str(n) for n in names]) if isinstance(names, list) else "all")
                         + (f" · require_approval {json.dumps(tool['require_approval'])}" if "require_approval" in tool else ""))
    return lines


def _output_lines(output: Any) -> list[str]:
    lines = []
    for item in output if isinstance(output, list) else []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "mcp_list_tools":
            names = [str(t.get("name")) for t in item.get("tools") or [] if isinstance(t, dict)]
            lines.append(f"mcp_list_tools {item.get('server_label')}: tools {_names(names)}"
                         + (f" · error {_short(item['error'], 100)}" if item.get("error") else ""))
        elif kind == "mcp_call":
            lines.append(f"mcp_call {item.get('name')} on {item.get('server_label')}: {item.get('status')}"
                         + (" · error" if item.get("error") else ""))
        elif kind == "message":
            lines.append(f"[{item.get('role')}] {_short(_content(item.get('content')))}")
        elif kind:
            lines.append(str(kind))
    return lines


def _answer_lines(body: dict) -> list[str]:
    if isinstance(body.get("error"), dict):
        e = body["error"]
        return [f"error · {e.get('type')} · code {e.get('code')}", _short(e.get("message", ""))]
    if body.get("object") == "chat.completion":
        choice = (body.get("choices") or [{}])[0]
        message = choice.get("message") if isinstance(choice, dict) else {}
        head = ["chat.completion", f"model {body.get('model')}", f"finish {choice.get('finish_reason')}", _usage(body.get("usage"))]
        return [" · ".join(h for h in head if h), f"[assistant] {_short(_content((message or {}).get('content')))}"]
    head = ["response", str(body.get("status")), f"model {body.get('model')}", _usage(body.get("usage"))]
    return [" · ".join(h for h in head if h), *_output_lines(body.get("output"))]


def _stream_lines(data: bytes) -> list[str] | None:
    parser = SSEParser()
    events, text, usage, done, llm = [], [], None, False, False
    for ev in parser.feed(data) + parser.flush():
        if ev.data is None:
            continue
        if ev.data == "[DONE]":
            done = True
            events.append("[DONE]")
            continue
        try:
            obj = json.loads(ev.data)
        except ValueError:
            events.append(f"{ev.event or 'event'} (not JSON)")
            continue
        if not isinstance(obj, dict):
            continue
        kind = obj.get("type") or obj.get("object") or ev.event or "event"
        llm |= kind == "chat.completion.chunk" or str(kind).startswith("response.")
        for choice in obj.get("choices") or []:
            if isinstance(choice, dict) and isinstance(choice.get("delta"), dict) and choice["delta"].get("content"):
                text.append(str(choice["delta"]["content"]))
        if kind == "response.output_text.delta" and isinstance(obj.get("delta"), str):
            text.append(obj["delta"])
        found = _usage(obj.get("usage")) or (_usage(obj["response"].get("usage")) if isinstance(obj.get("response"), dict) else None)
        usage = found or usage
        events.append(f"{kind} {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}")
    if not llm:
        return None
    head = [f"stream · {len(events)} events", usage, "ends [DONE]" if done else None]
    return [" · ".join(h for h in head if h), f"text: {_short(''.join(text))}", *(f"[{i}] {e}" for i, e in enumerate(events, 1))]


def _lines(data: bytes, metadata: Metadata) -> list[str] | None:
    if not data or not _is_llm_flow(metadata):
        return None
    if metadata.content_type == "text/event-stream":
        return _stream_lines(data)
    if metadata.content_type not in (None, "application/json"):
        return None
    try:
        body = json.loads(data)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    flow = metadata.flow
    if metadata.http_message is flow.request:
        return _request_lines(body) if ("messages" in body or "input" in body) else None
    if "error" in body or body.get("object") in ("chat.completion", "response"):
        return _answer_lines(body)
    return None


class LlmContentview(Contentview):
    """Bodies of LLM routes (OpenAI-compatible), summarized, then shown."""

    name = "LLM"
    syntax_highlight = "yaml"  # JSON is YAML, and the summary lines are YAML comments

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        lines = _lines(data, metadata)
        if lines is None:
            raise ValueError("not an OpenAI-compatible request or answer")
        text = "\n".join("# " + line for line in lines)
        if metadata.content_type != "text/event-stream":  # a stream's events are its lines already
            text += "\n" + json.dumps(json.loads(data), indent=2, ensure_ascii=False)
        return redaction.redact(text) + "\n"

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        return 2 if _lines(data, metadata) is not None else -1  # above the JSON view (1); never for other bodies
