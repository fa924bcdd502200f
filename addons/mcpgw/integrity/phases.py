"""The request phase of tool integrity (pipeline: after governance, before credentials).

On a POST it refuses, with a JSON-RPC error that says why:
- `tools/call`s of tools withheld from lists: changed since approval or never approved
  (pinning.judge_call), or blocked by the description scan (scanning.blocked);
- client messages whose params carry a credential (secrets.arguments: block), or redacts them
  (redact) or records them (audit).
A refusal is answered where the client reads it: in the POST's answer (Streamable HTTP; a batch
is refused whole, as governance does), or on the GET stream for the legacy HTTP+SSE transport
(the call is replaced by a ping whose answer becomes the error, governance/ledger.py).

On every GET and POST it installs the server -> client transforms: the tool list transform
(transform.py), then the secret scanner (leaks.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from mitmproxy import http

from ..context import Decision, FlowContext
from ..governance import annotate, ledger
from ..governance.enforce import _reads_post_answers
from ..protocol.jsonrpc import INVALID_PARAMS, INVALID_REQUEST, Message, dumps
from ..responses import jsonrpc_error, jsonrpc_errors_response
from ..sessions.caller import caller_key
from . import leaks, record
from .kinds import TOOLS, also
from .pinning import Judgement, judge_call, judge_use, store_for
from .scanning import blocked, scanner_for
from .settings import IntegritySettings
from .transform import ToolTransform


@dataclass(slots=True)
class Refusal:
    message: Message
    error: dict[str, Any]
    rule: str
    reason: str
    shadow: bool
    name: str = ""  # the tool, prompt or resource refused


def settings_of(ctx: FlowContext) -> IntegritySettings | None:
    route = ctx.match.route.route if ctx.match is not None else None
    return getattr(route, "integrity", None)


# requests whose answers or refusals read pins (a GET stream may carry any answer: always synced)
_JUDGED = frozenset({"tools/list", "tools/call", "prompts/list", "prompts/get", "resources/list", "resources/read",
                     "resources/templates/list"})


async def sync_pins(ctx: FlowContext, flow: http.HTTPFlow) -> None:
    """Pins shared through Redis (state/pins_redis.py): brought up to date before this request's
    calls and answers are judged (one GET when nothing changed). A Redis error fails the request."""
    settings = settings_of(ctx)
    if settings is None or settings.pin == "off" or settings.pins != "tofu" or flow.request.method not in ("GET", "POST"):
        return None
    if flow.request.method == "POST" and not any(m.method in _JUDGED for m in ctx.messages):
        return None  # initialize, notifications, ping...: nothing pinned is read for them
    sync = getattr(store_for(ctx.snapshot, ctx.route_name or "", settings), "sync", None)
    if sync is not None:
        await sync(ctx.route_name or "")
    return None


def check_tools(ctx: FlowContext, flow: http.HTTPFlow) -> http.Response | None:
    settings = settings_of(ctx)
    if settings is None or not settings.active or flow.request.method not in ("GET", "POST"):
        return None
    route = ctx.route_name or ""
    store = store_for(ctx.snapshot, route, settings) if settings.pin != "off" else None
    scan = settings.scan if settings.scan is not None and settings.scan.mode != "off" else None
    scanner = scanner_for(ctx.snapshot.source, scan.rules_file) if scan is not None else None
    leak_scanner = leaks.scanners(ctx.snapshot.policy).get(route)
    owner = caller_key(ctx, flow.request)
    transforms: list = [ToolTransform(flow, route, settings, store, scanner, owner,
                                      leak_scanner.list_screen if leak_scanner is not None else None)]
    if leak_scanner is not None:
        assert settings.secrets is not None
        transforms.append(leaks.LeakTransform(flow, settings.secrets, leak_scanner))
        transforms[0].stream_screen = leak_scanner.stream_screen()  # its list screen is that pass's (json_relay.py)
    refusals: list[Refusal] = []
    if flow.request.method == "POST":
        denied_before = {d.message_id for d in ctx.decisions if not d.allowed and not d.shadow}
        messages = [m for m in ctx.messages if m.id is None or m.id not in denied_before]
        refusals += _withheld_calls(ctx, flow, route, settings, store, scanner is not None, messages)
        if leak_scanner is not None:
            refusals += _credentials_sent(ctx, flow, settings, leak_scanner, messages, refusals)
    for r in refusals:
        _decide(ctx, r)
    enforced = [r for r in refusals if not r.shadow]
    if not enforced:
        ctx.server_transforms.extend(transforms)
        return None
    errors = {id(r.message): r.error for r in enforced}
    if ctx.is_batch or _reads_post_answers(flow.request):
        answers = [errors.get(id(m)) or jsonrpc_error(m.id, INVALID_REQUEST,
                                                      "Not forwarded: another message of this batch was refused")
                   for m in ctx.messages if m.kind == "request"]
        return jsonrpc_errors_response(flow.request, answers, batch=ctx.is_batch)
    # Legacy HTTP+SSE: the client reads answers on its GET stream; send a ping in the call's place
    first = enforced[0]
    token = ledger.new_stand_in(route, owner, first.message.id, first.error)
    flow.request.content = dumps({"jsonrpc": "2.0", "id": token, "method": "ping"})
    for name in ("mcp-method", "mcp-name"):
        flow.request.headers.pop(name, None)
    ctx.server_transforms.extend(transforms)
    return None


def _withheld_calls(ctx: FlowContext, flow: http.HTTPFlow, route: str, settings: IntegritySettings, store,
                    scanning: bool, messages: list[Message]) -> list[Refusal]:
    """tools/call of a withheld tool; with pin_also, prompts/get and resources/read of a withheld
    prompt or resource."""
    uses = {k.call: k for k in (TOOLS, *(also(settings.pin_also) if store is not None else ())) if k.call}
    out = []
    for m in messages:
        kind, params = uses.get(m.method or ""), m.params
        if kind is None or type(params) is not dict or type(params.get(kind.call_param)) is not str:
            continue
        name = params[kind.call_param]
        shadow = settings.pin == "shadow"
        if kind is not TOOLS:
            found = judge_use(store, route, kind.prefix + name, settings)
        else:
            found = judge_call(store, route, name, settings) if store is not None else None
            if found is None and scanning:
                entry = blocked.get((route, name))
                found = Judgement(name, "blocked", entry[0], rules=entry[1]) if entry is not None else None
                shadow = False  # only an enforcing scan blocks
        if found is None:
            continue
        rule = "integrity.scan" if found.status == "blocked" else "integrity.pin"
        record(ctx, {**found.record("would_refuse" if shadow else "refused"), "method": m.method})
        text = f"{kind.label} '{annotate.printable(name, 256)}' is withheld by the gateway: {found.reason()}"
        data = {"reason": f"{kind.record_key}_{found.status}", kind.record_key: name, "pinned_digest": found.pinned,
                "digest": found.digest or None, "changed_fields": list(found.fields),
                **({"rules": list(found.rules)} if found.rules else {})}
        out.append(Refusal(m, jsonrpc_error(m.id, INVALID_PARAMS, text, data), rule,
                           f"{kind.record_key} {found.status}", shadow, name))
    _annotate(flow, out)
    return out


def _credentials_sent(ctx: FlowContext, flow: http.HTTPFlow, settings: IntegritySettings, scanner: leaks.LeakScanner,
                      messages: list[Message], refused: list[Refusal]) -> list[Refusal]:
    """Credentials in what the client sends up: its requests' and notifications' params, and
    its answers to the server's requests (elicitation, sampling)."""
    secrets = settings.secrets
    assert secrets is not None
    action = secrets.arguments if secrets.mode == "enforce" else "audit"
    skip = {id(r.message) for r in refused if not r.shadow}
    judged = {id(m) for m in messages}  # governance refused the others already
    out, rewritten = [], False
    for i, m in enumerate(ctx.messages):
        if id(m) in skip or id(m) not in judged:
            continue
        member = "result" if m.kind == "response" else "params"
        value = m.obj.get(member)
        if value is None:
            continue
        # block redacts too: a response (an answer to the server) cannot be refused, so it is redacted
        new, hits, changed = scanner.scan(value, redact=action != "audit", path=member)
        found = hits.detectors - {"gateway_secret"}
        if not found:
            continue
        if action == "block" and m.kind == "request":
            verdict = "blocked"
            where = ", ".join(hits.paths)
            text = (f"The gateway refused this request: it carries a credential ({', '.join(sorted(found))} "
                    f"in {where}); credentials are not passed to tools")
            out.append(Refusal(m, jsonrpc_error(m.id, INVALID_PARAMS, text, {"reason": "credential_in_params",
                                                                              "detectors": sorted(found),
                                                                              "where": hits.paths}),
                               "integrity.secrets", "credential in params", False))
        elif action != "audit":
            verdict = "redacted"
        else:
            verdict = "audited" if secrets.mode == "enforce" or secrets.arguments == "audit" else f"would_{secrets.arguments}"
        if changed and verdict != "blocked":  # (a refused message keeps its identity: its error is found by it)
            ctx.messages[i] = Message({**m.obj, member: new}, m.kind)
            rewritten = True
        record(ctx, leaks.finding("arguments", hits, verdict))
        annotate.note(flow, f"integrity secrets in {m.method or 'a response'}: {', '.join(sorted(found))} "
                            f"at {', '.join(hits.paths)}: {verdict.upper()}")
        annotate.mark(flow, denied=verdict == "blocked", would_deny=verdict != "blocked")
    if rewritten and not any(r for r in out if not r.shadow):
        body = [m.obj for m in ctx.messages] if ctx.is_batch else ctx.messages[0].obj
        flow.request.content = dumps(body)
    return out


def _annotate(flow: http.HTTPFlow, refusals: list[Refusal]) -> None:
    if not refusals:
        return
    names = ", ".join(annotate.printable(r.name) for r in refusals)
    methods = "/".join(sorted({r.message.method or "" for r in refusals}))
    shadow = all(r.shadow for r in refusals)
    annotate.note(flow, f"integrity {methods} {names}: {'WOULD_DENY (shadow)' if shadow else 'DENIED'} "
                        f"({', '.join(sorted({r.reason for r in refusals}))})")
    annotate.mark(flow, denied=not shadow, would_deny=shadow)


def _decide(ctx: FlowContext, r: Refusal) -> None:
    """The message's audit decision: the governance decision about it, now a denial by this rule."""
    name = r.message.params.get("name") if type(r.message.params) is dict else None
    for i, d in enumerate(ctx.decisions):
        if d.message_id == r.message.id and d.method in (None, r.message.method):
            ctx.decisions[i] = replace(d, allowed=False, rule=r.rule, reason=r.reason, shadow=r.shadow)
            return
    ctx.decisions.append(Decision(False, r.message.method, "tool" if r.message.method == "tools/call" else None,
                                  name if isinstance(name, str) else None, r.rule, r.reason, r.message.id,
                                  shadow=r.shadow))
