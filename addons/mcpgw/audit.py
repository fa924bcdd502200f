"""Audit records: one per JSON-RPC message the gateway governed, or one per HTTP request that
carried none (a refusal before the body was read, a GET stream, a DELETE, discovery).

Records are built from the flow context and the finished flow, in the hook, as plain dicts; the
expensive part of payload logging (parsing the response, redaction) is a closure that the
writer thread runs. Records never hold credentials: no headers, no query strings, and payloads
only where a route asks for them, with secrets redacted."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ReverseMode

from .headers import header
from .protocol.jsonrpc import Message
from .protocol.sse import SSEParser

if TYPE_CHECKING:
    from .context import Decision, FlowContext

MAX_TEXT = 512  # longest client-supplied string (method, tool name, id) kept in a record
PAYLOAD_LIMIT = 64 * 1024  # payloads larger than this (serialized) are left out of the record

Redactor = Callable[[str], str]


@dataclass(slots=True)
class Observation:
    """What the audit addon notes about a flow on its way through the hooks."""

    client_path: str = ""  # the path the client asked for, without the query string
    answered_by_gateway: bool = False  # the gateway answered itself: nothing reached the upstream
    streamed_bytes: int | None = None  # response bytes relayed, when the response was streamed
    captured: bytearray | None = None  # streamed response kept for payload logging, up to PAYLOAD_LIMIT
    recorded: bool = False


@dataclass(slots=True)
class PendingRecord:
    """A record as built in the hook; `finish` (in the writer thread) renders its payload and
    redacts every string in it."""

    record: dict[str, Any]
    render_payload: Callable[[], dict[str, Any]] | None = None
    redact: Redactor | None = None

    def finish(self) -> dict[str, Any]:
        record = self.record
        if self.render_payload is not None:
            record = {**record, "payload": self.render_payload()}
        return _redact_strings(record, self.redact) if self.redact is not None else record


def _text(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + "..."
    return value


_second: tuple[int, str] = (-1, "")  # the last whole second as text: strftime was a record's largest part


def _iso(ts: float) -> str:
    global _second
    whole = int(ts // 1)
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int(ts % 1 * 1000):03d}Z"


def _ms(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round((end - start) * 1000, 3)


def _refusal_reason(resp: http.Response) -> str:
    """The gateway's own explanation from a refusal it wrote (safe to log: the gateway's text)."""
    try:
        body = json.loads(resp.get_content(strict=False) or b"")
    except ValueError:
        return ""
    if isinstance(body, list) and body:
        body = body[0]
    if not isinstance(body, dict):
        return ""
    if isinstance(body.get("error"), dict):
        return _text(str(body["error"].get("message", "")))
    return _text(str(body.get("message") or body.get("error_description") or ""))


def consumer_of(ctx: FlowContext | None) -> dict[str, Any] | None:
    ident = ctx.identity if ctx else None
    if ident is None:
        return None
    record = {"name": ident.username, "id": ident.id, "custom_id": ident.custom_id,
              "groups": list(ident.groups), "method": ident.method}
    if ident.authenticated_groups:  # what route access may have matched instead (governance/access.py)
        record["authenticated_groups"] = list(ident.authenticated_groups)
    return record


def match_decisions(messages: list[Message], decisions: list[Decision]) -> list[Decision | None]:
    """Pair each message with the governance decision about it: by JSON-RPC id (and method, when
    the decision names one), in order, each decision used once."""
    unused = list(decisions)
    paired: list[Decision | None] = []
    for msg in messages:
        found = None
        for d in unused:
            if d.message_id == msg.id and (d.method is None or d.method == msg.method):
                found = d
                break
        if found is not None:
            unused.remove(found)
        paired.append(found)
    return paired


def decision_label(d: Decision) -> str:
    if d.shadow:
        return "would_deny"
    return "allow" if d.allowed else "deny"


def build(ctx: FlowContext | None, flow: http.HTTPFlow, obs: Observation, *,
          redact: Redactor | None = None) -> list[PendingRecord]:
    """The records for a finished (or failed) flow."""
    req, resp = flow.request, flow.response
    # Answered by the gateway: at the request (nothing was forwarded) or in place of the upstream's
    # response, whose status is then unknown.
    gateway_answer = obs.answered_by_gateway or (ctx is not None and ctx.answered_by is not None)
    refused = gateway_answer and resp is not None and resp.status_code >= 400
    if ctx is not None:
        mode = ctx.mode
    else:  # refused before a route was found
        mode = "gateway" if isinstance(flow.client_conn.proxy_mode, ReverseMode) else "intercept"
    session = header(req.headers, "mcp-session-id") or (header(resp.headers, "mcp-session-id") if resp else None)
    base: dict[str, Any] = {
        "time": _iso(req.timestamp_start),
        "flow": flow.id,
        "route": ctx.route_name if ctx else None,
        "mode": mode,
        "client": flow.client_conn.peername[0] if flow.client_conn.peername else None,
        "consumer": consumer_of(ctx),
        "session": _text(session),
        "http": {
            "method": req.method,
            "path": _text(obs.client_path or req.path.split("?", 1)[0]),
            "status": resp.status_code if resp else None,
            "upstream_status": None if gateway_answer or resp is None else resp.status_code,
        },
    }
    if flow.error is not None:
        base["error"] = _text(flow.error.msg)
    if ctx is not None and ctx.audit_fields:  # e.g. an LLM call's tokens and cost (ai/)
        base.update(ctx.audit_fields)
    timing = {
        "duration_ms": _ms(req.timestamp_start, resp.timestamp_end if resp and resp.timestamp_end else
                           (flow.error.timestamp if flow.error else None)),
        "upstream_ms": None if gateway_answer or resp is None else _ms(req.timestamp_end, resp.timestamp_start),
        "request_bytes": len(req.raw_content or b""),
        "response_bytes": obs.streamed_bytes if obs.streamed_bytes is not None else
        (len(resp.raw_content or b"") if resp else None),
        "policy": ctx.snapshot.digest[:16] if ctx else None,
    }
    refusal = {"rule": (ctx.answered_by if ctx else None) or "routing",
               "reason": _refusal_reason(resp)} if refused and resp is not None else None

    messages = ctx.messages if ctx else []
    if not messages:
        verdict = {"decision": "deny", **refusal} if refusal else {"decision": "allow", "rule": None, "reason": None}
        return [PendingRecord({**base, **verdict, **timing}, redact=redact)]

    payload_of = _payload_renderer(ctx, flow, obs, redact) if ctx and logs_payloads(ctx) else None
    records = []
    for msg, d in zip(messages, match_decisions(messages, ctx.decisions)):
        rpc = {"id": _text(msg.id), "method": _text(msg.method), "kind": msg.kind}
        if ctx.is_batch:
            rpc["batch"] = len(messages)
        if d is not None:
            verdict = {"primitive": d.primitive, "name": _text(d.name), "decision": decision_label(d),
                       "rule": d.rule or None, "reason": d.reason or None}
        elif refusal:
            verdict = {"primitive": None, "name": None, "decision": "deny", **refusal}
        else:
            verdict = {"primitive": None, "name": None, "decision": "allow", "rule": None, "reason": None}
        records.append(PendingRecord({**base, "jsonrpc": rpc, **verdict, **timing},
                                     payload_of(msg) if payload_of else None, redact))
    return records


def logs_payloads(ctx: FlowContext) -> bool:
    settings = ctx.match.route.route.audit if ctx.match else None
    return settings is not None and settings.log_payloads


# -- payloads ----------------------------------------------------------------------------------

def _payload_renderer(ctx: FlowContext, flow: http.HTTPFlow, obs: Observation,
                      redact: Redactor | None) -> Callable[[Message], Callable[[], dict[str, Any]]]:
    """Capture what payload logging needs now (immutable bytes and the parsed request messages);
    parse, match and redact later, in the writer thread."""
    resp = flow.response
    body: bytes | None = None
    ctype = ""
    if resp is not None:
        ctype = header(resp.headers, "content-type", "").split(";")[0].strip().lower()
        body = bytes(obs.captured) if obs.captured is not None else resp.get_content(strict=False)

    def for_message(msg: Message) -> Callable[[], dict[str, Any]]:
        def render() -> dict[str, Any]:
            answers = _server_messages(body, ctype) if msg.kind == "request" else []
            response = next((a for a in answers if "method" not in a and a.get("id") == msg.id), None)
            return {"request": _bounded(msg.obj, redact), "response": _bounded(response, redact)}

        return render

    return for_message


def _server_messages(body: bytes | None, ctype: str) -> list[dict]:
    if not body:
        return []
    if ctype == "text/event-stream":
        parser = SSEParser()
        docs = []
        for ev in parser.feed(body) + parser.flush():
            if ev.data is not None and ev.event in (None, "", "message"):
                try:
                    docs.append(json.loads(ev.data))
                except ValueError:
                    continue
    else:
        try:
            docs = [json.loads(body)]
        except ValueError:
            return []
    out: list[dict] = []
    for doc in docs:
        out.extend(m for m in (doc if isinstance(doc, list) else [doc]) if isinstance(m, dict))
    return out


def _bounded(obj: Any, redact: Redactor | None) -> Any:
    if obj is None:
        return None
    text = json.dumps(obj, ensure_ascii=False)
    if len(text) > PAYLOAD_LIMIT:
        return {"omitted": f"{len(text)} bytes, more than the {PAYLOAD_LIMIT} logged"}
    if redact is None:
        return obj
    # Strings one by one catch exact secret values whatever characters they hold; the JSON text
    # as a whole catches credential-shaped members ("client_secret": "...").
    obj = _redact_strings(obj, redact)
    try:
        return json.loads(redact(json.dumps(obj, ensure_ascii=False)))
    except ValueError:
        return obj


def _redact_strings(obj: Any, redact: Redactor) -> Any:
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact(k): _redact_strings(v, redact) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_redact_strings(v, redact) for v in obj]
    return obj
