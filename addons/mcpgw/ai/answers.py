"""Response phases of an LLM route: usage from the answer, as it passes.

Streams are relayed event by event (protocol/sse.py's parser; only an incomplete event's bytes
are held): chat usage is read from the chunk carrying `usage`, Responses usage from
`response.completed`. When the gateway added `include_usage` for a client that did not ask, the
usage-only chunk is dropped and the `"usage": null` of the other chunks removed, so the client
sees the stream it asked for. JSON answers are read whole (they are small and the usage is in
them); anything else passes untouched, without usage."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import TYPE_CHECKING

from mitmproxy import http

from .. import audit
from ..governance import annotate
from ..headers import header
from ..protocol.sse import SSEError, SSEEvent, SSEParser
from . import mcp_tools, targets, usage as usage_mod
from .relay import relay
from .request import LlmState, ai_error

if TYPE_CHECKING:
    from ..context import FlowContext

log = logging.getLogger("mcpgw.ai")
MAX_JSON = 16 * 1024 * 1024  # a JSON answer read for its usage; larger ones pass unread


def _ctype(resp: http.Response) -> str:
    return (header(resp.headers, "content-type", "") or "").split(";", 1)[0].strip().lower()


_NULL_USAGE = re.compile(r'"usage"\s*:\s*null')
_NULL_USAGE_LAST = ',"usage":null}'
_CHOICES = re.compile(r'"choices"\s*:\s*\[\s*\{')  # a chunk with a choice: the first token's time
# The same tests on an event's raw bytes (`data: ` and the line breaks around its JSON add no
# '"usage"'), for the chat fast path that never builds the event (LlmStream._raw_chat)
_NULL_USAGE_B = re.compile(rb'"usage"\s*:\s*null')
_CHOICES_B = re.compile(rb'"choices"\s*:\s*\[\s*\{')
_NULL_USAGE_EVENT_END = b',"usage":null}\n\n'
_RESPONSES_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_RESPONSES_ITEMS = frozenset({"response.output_item.added", "response.output_item.done"})


class LlmStream:
    """resp.stream for an LLM SSE answer: bytes in, the same events out (less the injected usage)."""

    __slots__ = ("state", "parser", "chat")

    def __init__(self, state: LlmState):
        self.state = state
        self.parser = SSEParser(state.settings.max_response_event)
        self.chat = state.settings.route_type == "llm/v1/chat"
        if self.chat:
            self.parser.screen = self._raw_chat

    def __call__(self, chunk: bytes) -> list[bytes]:
        state = self.state
        try:
            events = self.parser.feed(chunk) if chunk else self.parser.flush()
        except SSEError as e:  # unreadable: stop relaying rather than pass what cannot be counted
            state.stream_error = str(e)
            log.warning("LLM stream could not be parsed (%s); ending it", e)
            return []
        out = []
        for ev in events:
            kept = ev if type(ev) is bytes else self._event(ev)
            if kept:
                out.append(kept)
        if not chunk:
            state.ended = time.monotonic()
        return out

    def _raw_chat(self, raw: bytes) -> bytes | None:
        """A chat event judged on its raw bytes, as `_event` judges its data: what to send on, or
        None to parse it. Most chunks are a single `data:` line whose only usage is the
        `"usage":null` the gateway's include_usage added: cut as bytes, never decoded."""
        state = self.state
        if state.first_token is None and _CHOICES_B.search(raw):
            state.first_token = time.monotonic()
        if b'"usage"' not in raw:
            return raw
        if raw.count(b'"usage"') != 1 or not _NULL_USAGE_B.search(raw):
            return None
        if not state.usage_injected:
            return raw
        if raw.endswith(_NULL_USAGE_EVENT_END) and raw.startswith(b"data: ") and raw.count(b"\n") == 2 \
                and b"\r" not in raw:
            return raw[:-len(_NULL_USAGE_EVENT_END)] + b"}\n\n"  # what ev.encode() makes of the cut data
        return None

    def _event(self, ev: SSEEvent) -> bytes | None:
        state = self.state
        text = ev.data
        if text is None or text == "[DONE]":
            return ev.raw
        # Fast paths: most events carry nothing to count or change, and a JSON string can never hold
        # an unescaped '"usage"', so a substring test tells which events need parsing.
        if self.chat:
            if state.first_token is None and _CHOICES.search(text):
                state.first_token = time.monotonic()
            if '"usage"' not in text:
                return ev.raw
            if text.count('"usage"') == 1 and _NULL_USAGE.search(text):
                if not state.usage_injected:
                    return ev.raw
                if text.endswith(_NULL_USAGE_LAST):  # the top-level object's last member: cut it as text
                    ev.data = text[:-len(_NULL_USAGE_LAST)] + "}"
                    return ev.encode()
        else:
            kind = ev.event
            if kind is not None:  # Responses events name themselves; unnamed ones are parsed
                if state.first_token is None and kind == "response.output_text.delta":
                    state.first_token = time.monotonic()
                if kind not in _RESPONSES_FINAL and not (state.mcp_servers and kind in _RESPONSES_ITEMS):
                    return ev.raw
        try:
            data = json.loads(ev.data)
        except ValueError:
            return ev.raw
        if not isinstance(data, dict):
            return ev.raw
        if self.chat:
            return self._chat(ev, data)
        kind = data.get("type")
        if state.first_token is None and kind == "response.output_text.delta":
            state.first_token = time.monotonic()
        changed = False
        if kind in ("response.completed", "response.incomplete", "response.failed") and isinstance(data.get("response"), dict):
            state.usage = usage_mod.parse(data["response"].get("usage")) or state.usage
            state.answered_model = data["response"].get("model") or state.answered_model
            changed = mcp_tools.filter_output(state, data["response"])
        elif kind in ("response.output_item.added", "response.output_item.done"):
            changed = mcp_tools.filter_item(state, data.get("item"), final=kind == "response.output_item.done")
        if not changed:
            return ev.raw
        ev.data = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        return ev.encode()

    def _chat(self, ev: SSEEvent, data: dict) -> bytes | None:
        state = self.state
        if isinstance(data.get("model"), str):
            state.answered_model = data["model"]
        found = usage_mod.parse(data.get("usage"))
        if found is not None:
            state.usage = found
        if not state.usage_injected or "usage" not in data:
            return ev.raw
        if found is not None and not data.get("choices"):
            return None  # the usage-only chunk the client did not ask for
        data.pop("usage")
        ev.data = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        return ev.encode()


def prepare_answer(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """Response headers: stream SSE through LlmStream, read JSON whole, pass the rest."""
    state: LlmState | None = ctx.ai
    resp = flow.response
    if state is None or resp is None:
        return None
    # a refusal of the gateway's own (a spent token budget's 429, say) says nothing of the target
    targets.answered(state, resp.status_code, reached=ctx.answered_by is None)
    if relay.holds(state, resp):
        return None  # a JSON request's answer to retry elsewhere (relay.retry_answer, from the LLM addon)
    ctype = _ctype(resp)
    if ctype == "text/event-stream":
        encoding = (header(resp.headers, "content-encoding", "") or "identity").lower()
        if encoding != "identity":
            return ai_error(502, f"The provider compressed its stream ({encoding}); the gateway reads streams uncompressed",
                            kind="server_error")
        resp.headers.pop("content-length", None)
        resp.stream = LlmStream(state)
        return None
    declared = header(resp.headers, "content-length", "")
    if ctype == "application/json" and not (declared.isdigit() and int(declared) > MAX_JSON):
        resp.stream = False
        state.first_token = time.monotonic()
        return None
    resp.stream = True
    return None


def finish(ctx: "FlowContext", flow: http.HTTPFlow) -> None:
    """Response end: the usage of a JSON answer, then one LlmCall for the audit and listeners."""
    state: LlmState | None = ctx.ai
    resp = flow.response
    if state is None or resp is None or state.published or state.retry_job is not None:
        return None  # (a held answer: the LLM addon retries, then finishes)
    targets.answered(state, resp.status_code, reached=False)  # (no-op once the target's answer was seen)
    if not resp.stream and _ctype(resp) == "application/json":
        try:
            body = json.loads(resp.get_content(strict=False) or b"")
        except (ValueError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict):
            state.usage = usage_mod.parse(body.get("usage"))
            state.answered_model = body.get("model") if isinstance(body.get("model"), str) else None
            if mcp_tools.filter_output(state, body):
                resp.content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
            if state.payload is not None:
                state.payload["response"] = body
    publish(ctx, flow, state)
    return None


def publish(ctx: "FlowContext", flow: http.HTTPFlow, state: LlmState) -> None:
    state.published = True
    end = state.ended or time.monotonic()
    opts = state.options
    ident = ctx.identity
    call = usage_mod.LlmCall(
        route=ctx.route_name or "", consumer=ident.username or ident.id if ident else None,
        groups=tuple(ident.groups) if ident else (), model=state.answered_model or state.model,
        status=flow.response.status_code if flow.response else None, usage=state.usage,
        cost=usage_mod.cost(state.usage, opts.input_cost, opts.output_cost),
        latency_ms=round((end - state.started) * 1000, 3),
        ttft_ms=round((state.first_token - state.started) * 1000, 3) if state.first_token else None,
        streamed=state.stream)
    targets.observe(state, call)  # lowest-latency and lowest-usage measures
    if state.settings.logging.log_statistics:
        u = call.usage
        ctx.audit_fields["llm"] = {
            "route_type": state.settings.route_type, "provider": state.settings.model.provider,
            "model": audit._text(call.model), "requested_model": audit._text(state.model), "stream": call.streamed,
            "prompt_tokens": u.prompt_tokens if u else None, "completion_tokens": u.completion_tokens if u else None,
            "total_tokens": u.total_tokens if u else None, "cost": call.cost,
            "latency_ms": call.latency_ms, "time_to_first_token_ms": call.ttft_ms,
            "error": state.stream_error}
        if state.target is not None:
            ctx.audit_fields["llm"].update(target=state.target.target.url, attempts=state.attempts)
        if state.payload is not None:  # bounded here, redacted string by string by the audit writer
            ctx.audit_fields["llm"]["payload"] = {k: audit._bounded(v, None) for k, v in state.payload.items()}
            if state.stream:
                ctx.audit_fields["llm"]["payload"]["response"] = {"omitted": "a stream (never held)"}
            state.payload = None
        if state.mcp_servers:
            ctx.audit_fields["llm"]["mcp_servers"] = {label: route for label, (route, _) in state.mcp_servers.items()}
    _annotate(ctx, flow, state, call)
    usage_mod.publish(call)


def _annotate(ctx: "FlowContext", flow: http.HTTPFlow, state: LlmState, call: usage_mod.LlmCall) -> None:
    """mitmweb: a comment line for the LLM call and one per MCP tool call the provider made."""
    caller = annotate.caller_label(ctx.identity)
    u = call.usage
    tokens = f"{u.prompt_tokens}+{u.completion_tokens} tokens" if u else "no usage reported"
    annotate.note(flow, f"{caller} LLM {annotate.printable(call.model or '?')}: {tokens}"
                        + (f", cost {call.cost:.6f}" if call.cost is not None else ""))
    denied = False
    for c in state.mcp_calls:
        ok = c["decision"] == "allow"
        denied |= not ok
        annotate.note(flow, f"{caller} mcp_call {annotate.printable(str(c['name']))} on "
                            f"{annotate.printable(str(c['server_label']))} ({c['route'] or 'no route'}): "
                            f"{'allowed' if ok else 'DENIED (outside allowed_tools)'}, {c['status']}")
    if denied:
        annotate.mark(flow, denied=True)
