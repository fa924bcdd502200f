#!/usr/bin/env python3
"""An OpenAI-compatible LLM provider for local use and tests: Chat Completions
(`POST /v1/chat/completions`) and Responses (`POST /v1/responses`), JSON and streamed (SSE).

It follows OpenAI's published API reference (platform.openai.com/docs/api-reference, the
Chat Completions and Responses objects and streaming events as of the openai-python 3.x SDK
types): chat answers are `chat.completion` objects, streams `chat.completion.chunk` events ending
with `data: [DONE]`, with a last chunk whose `choices` is empty and which carries `usage` only when
the request asked for it with `stream_options.include_usage`; Responses answers are `response`
objects, streams typed events (`response.created`, `response.in_progress`,
`response.output_item.added`, `response.content_part.added`, `response.output_text.delta`, ...,
`response.completed`, each with its `sequence_number`) with no `[DONE]`.

The answer is deterministic: "echo:" and the words of the last user input. Usage counts words:
prompt tokens are the words of every input message, completion tokens the words answered.
Request headers steer it for tests (they are not part of OpenAI's API):

    x-demo-words: N      answer with N words instead of the echo
    x-demo-word-size: N  each of those words N characters long (large streams for tests)
    x-demo-delay: S      seconds to wait before each streamed event
    x-demo-status: 500   answer with that HTTP status and an OpenAI error body
    x-demo-ignore-allowed-tools: 1   list every tool of an MCP server, whatever allowed_tools says
                         (a provider that does not honour it: the gateway must filter)

Responses requests with MCP tools (`tools: [{type: "mcp", server_label, server_url, headers,
allowed_tools}]`) are executed for real, as OpenAI does: the provider connects to each server
with the official MCP SDK and the tool's headers, answers an `mcp_list_tools` item with the
server's tools (those of allowed_tools), and for an input "call NAME {json arguments}" an
`mcp_call` item with the tool's result, before its message.

Every request is recorded (method, path, query, headers, JSON body): GET /_demo/requests lists
them, POST /_demo/reset forgets them. Run: scripts/demo_llm_provider.py --port 8090"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def _words(value: Any) -> list[str]:
    """The words of a message content: a string, or a list of content parts with `text`."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [w for part in value if isinstance(part, dict) for w in str(part.get("text", "")).split()]
    return []


def _chat_prompt(body: dict) -> tuple[list[str], list[str]]:
    """(every input word, the last user message's words) of a chat request."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    every = [w for m in messages for w in _words(m.get("content"))]
    users = [m for m in messages if m.get("role") == "user"]
    return every, _words(users[-1].get("content")) if users else []


def _responses_prompt(body: dict) -> tuple[list[str], list[str]]:
    value = body.get("input")
    if isinstance(value, str):
        words = value.split()
        return words + _words(body.get("instructions")), words
    items = [i for i in value or [] if isinstance(i, dict)]
    every = [w for i in items for w in _words(i.get("content"))] + _words(body.get("instructions"))
    users = [i for i in items if i.get("role") == "user"]
    return every, _words(users[-1].get("content")) if users else []


def _answer(request: Request, last: list[str]) -> list[str]:
    n = request.headers.get("x-demo-words")
    if n is not None and n.isdigit():
        size = request.headers.get("x-demo-word-size")
        pad = "x" * (int(size) - 1) if size and size.isdigit() and int(size) > 1 else ""
        return [f"w{pad}" if pad else f"w{i}" for i in range(int(n))]
    return ["echo:", *last]


_CALL = re.compile(r"\bcall (\w+)\s*(\{.*\})?", re.S)


def _allowed(tool: dict) -> set[str] | None:
    value = tool.get("allowed_tools")
    if isinstance(value, list):
        return set(value)
    if isinstance(value, dict) and isinstance(value.get("tool_names"), list):
        return set(value["tool_names"])
    return None


async def _run_mcp(tool: dict, text: str, honour_allowed: bool) -> list[dict]:
    """Connect to the tool's server as the provider would, and return its output items."""
    import httpx
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import McpError

    label = tool.get("server_label")
    headers = {str(k): str(v) for k, v in (tool.get("headers") or {}).items()}
    if tool.get("authorization"):
        headers["Authorization"] = f"Bearer {tool['authorization']}"
    allowed = _allowed(tool) if honour_allowed else None
    items = []
    try:
        async with httpx.AsyncClient(headers=headers, timeout=30) as http_client, \
                streamable_http_client(tool["server_url"], http_client=http_client) as (read, write, _), \
                ClientSession(read, write) as session:
            await session.initialize()
            listed = (await session.list_tools()).tools
            tools = [{"name": t.name, "description": t.description, "input_schema": t.inputSchema,
                      "annotations": t.annotations.model_dump(exclude_none=True) if t.annotations else None}
                     for t in listed if allowed is None or t.name in allowed]
            items.append({"id": f"mcpl_{uuid.uuid4().hex}", "type": "mcp_list_tools", "server_label": label,
                          "tools": tools, "error": None})
            m = _CALL.search(text)
            if m and (allowed is None or m[1] in allowed):
                arguments = m[2] or "{}"
                call = {"id": f"mcp_{uuid.uuid4().hex}", "type": "mcp_call", "server_label": label,
                        "name": m[1], "arguments": arguments, "approval_request_id": None}
                try:
                    result = await session.call_tool(m[1], json.loads(arguments))
                except McpError as e:  # the server refused the call (a JSON-RPC error): a failed call item
                    items.append({**call, "output": None, "status": "failed",
                                  "error": {"type": "mcp_protocol_error", "code": e.error.code, "message": e.error.message}})
                    return items
                output = "".join(c.text for c in result.content if getattr(c, "type", "") == "text")
                items.append({**call, "output": None if result.isError else output,
                              "error": {"type": "mcp_tool_execution_error",
                                        "content": [c.model_dump(exclude_none=True) for c in result.content]}
                              if result.isError else None,
                              "status": "failed" if result.isError else "completed"})
    except Exception as e:  # noqa: BLE001 - OpenAI reports a failed listing in the item
        items.append({"id": f"mcpl_{uuid.uuid4().hex}", "type": "mcp_list_tools", "server_label": label,
                      "tools": [], "error": f"mcp connection error: {str(e)[:300]}"})
    return items


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "server_error" if status >= 500 else "invalid_request_error",
                                   "param": None, "code": None}}, status_code=status)


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"{head}data: {text}\n\n".encode()


class Provider:
    """status: answer every request with that HTTP status (a failing target, for balancer tests);
    delay: seconds to wait before answering any request (a slow target)."""

    def __init__(self, status: int | None = None, delay: float = 0.0) -> None:
        self.status, self.delay = status, delay
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/responses", self.responses, methods=["POST"]),
            Route("/_demo/requests", self.list_requests, methods=["GET"]),
            Route("/_demo/reset", self.reset, methods=["POST"]),
        ])

    async def _read(self, request: Request) -> dict | Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self.requests.append({"method": request.method, "path": request.url.path, "query": request.url.query,
                              "headers": dict(request.headers), "body": body})
        if not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.")
        if self.delay:
            await asyncio.sleep(self.delay)
        status = request.headers.get("x-demo-status") or (str(self.status) if self.status else None)
        if status and status.isdigit():
            return _error(int(status), f"demo provider answers {status} as asked")
        return body

    async def list_requests(self, request: Request) -> JSONResponse:
        return JSONResponse(self.requests)

    async def reset(self, request: Request) -> JSONResponse:
        self.requests.clear()
        return JSONResponse({"ok": True})

    # -- chat completions ----------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        body = await self._read(request)
        if isinstance(body, Response):
            return body
        prompt, last = _chat_prompt(body)
        words = _answer(request, last)
        usage = {"prompt_tokens": len(prompt), "completion_tokens": len(words),
                 "total_tokens": len(prompt) + len(words),
                 "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                               "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
                "model": str(body.get("model") or "demo-model"), "service_tier": "default",
                "system_fingerprint": "fp_demo"}
        if not body.get("stream"):
            return JSONResponse({**base, "object": "chat.completion", "choices": [{
                "index": 0, "message": {"role": "assistant", "content": " ".join(words), "refusal": None,
                                        "annotations": []},
                "logprobs": None, "finish_reason": "stop"}], "usage": usage})
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        delay = float(request.headers.get("x-demo-delay") or 0)

        async def events() -> AsyncIterator[bytes]:
            chunk = {**base, "object": "chat.completion.chunk"}
            extra = {"usage": None} if include_usage else {}
            deltas = [{"role": "assistant", "content": "", "refusal": None}] + [
                {"content": (" " if i else "") + w} for i, w in enumerate(words)]
            for delta in deltas:
                if delay:
                    await asyncio.sleep(delay)
                yield _sse({**chunk, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                  "finish_reason": None}], **extra})
            yield _sse({**chunk, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
                        **extra})
            if include_usage:
                yield _sse({**chunk, "choices": [], "usage": usage})
            yield _sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    # -- responses -----------------------------------------------------------------------------

    async def responses(self, request: Request) -> Response:
        body = await self._read(request)
        if isinstance(body, Response):
            return body
        prompt, last = _responses_prompt(body)
        words = _answer(request, last)
        text = " ".join(words)
        rid, mid = f"resp_{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex}"
        usage = {"input_tokens": len(prompt), "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": len(words), "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": len(prompt) + len(words)}
        message = {"id": mid, "type": "message", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}
        honour = request.headers.get("x-demo-ignore-allowed-tools") != "1"
        mcp_items = [item for tool in body.get("tools") or [] if isinstance(tool, dict) and tool.get("type") == "mcp"
                     and tool.get("server_url") for item in await _run_mcp(tool, " ".join(last), honour)]

        def response(status: str, output: list, usage_value: dict | None) -> dict:
            return {"id": rid, "object": "response", "created_at": int(time.time()), "status": status,
                    "background": False, "error": None, "incomplete_details": None,
                    "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
                    "model": str(body.get("model") or "demo-model"), "output": output,
                    "parallel_tool_calls": True, "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
                    "service_tier": "default", "store": True, "temperature": body.get("temperature", 1.0),
                    "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": body.get("tools") or [],
                    "top_p": body.get("top_p", 1.0), "truncation": "disabled", "usage": usage_value,
                    "user": None, "metadata": {}}

        if not body.get("stream"):
            return JSONResponse(response("completed", [*mcp_items, message], usage))
        delay = float(request.headers.get("x-demo-delay") or 0)

        async def events() -> AsyncIterator[bytes]:
            seq = 0

            def ev(kind: str, **fields: Any) -> bytes:
                nonlocal seq
                data = {"type": kind, "sequence_number": seq, **fields}
                seq += 1
                return _sse(data, kind)

            yield ev("response.created", response=response("in_progress", [], None))
            yield ev("response.in_progress", response=response("in_progress", [], None))
            for n, mcp_item in enumerate(mcp_items):
                kind = mcp_item["type"]
                phase = "mcp_list_tools" if kind == "mcp_list_tools" else "mcp_call"
                yield ev("response.output_item.added", output_index=n,
                         item={**mcp_item, **({"tools": []} if kind == "mcp_list_tools" else
                                              {"status": "in_progress", "output": None})})
                yield ev(f"response.{phase}.in_progress", output_index=n, item_id=mcp_item["id"])
                if kind == "mcp_call":
                    yield ev("response.mcp_call_arguments.done", output_index=n, item_id=mcp_item["id"],
                             arguments=mcp_item["arguments"])
                done = "failed" if mcp_item.get("error") else "completed"
                yield ev(f"response.{phase}.{done}", output_index=n, item_id=mcp_item["id"])
                yield ev("response.output_item.done", output_index=n, item=mcp_item)
            at = len(mcp_items)
            item = {**message, "status": "in_progress", "content": []}
            yield ev("response.output_item.added", output_index=at, item=item)
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            yield ev("response.content_part.added", item_id=mid, output_index=at, content_index=0, part=part)
            for i, w in enumerate(words):
                if delay:
                    await asyncio.sleep(delay)
                yield ev("response.output_text.delta", item_id=mid, output_index=at, content_index=0,
                         delta=(" " if i else "") + w, logprobs=[])
            yield ev("response.output_text.done", item_id=mid, output_index=at, content_index=0, text=text, logprobs=[])
            yield ev("response.content_part.done", item_id=mid, output_index=at, content_index=0,
                     part={**part, "text": text})
            yield ev("response.output_item.done", output_index=at, item=message)
            yield ev("response.completed", response=response("completed", [*mcp_items, message], usage))

        return StreamingResponse(events(), media_type="text/event-stream")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    import uvicorn

    print(f"demo LLM provider listening on http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.run(Provider().app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
