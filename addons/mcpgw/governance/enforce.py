"""The governance request phase: every client message on a route with an `acl` is classified,
decided and either forwarded or answered by the gateway.

Decided (the primitive comes from the body, never from headers):
  tools/call (params.name), prompts/get (params.name), resources/read and resources/subscribe
  (params.uri), completion/complete (params.ref), and task follow-ups (tasks/get, tasks/result,
  tasks/cancel: allowed only for a task created through this gateway, by this caller, by a call
  the caller may make). List requests are let through; every list result on the route is
  filtered (filtering.py), whatever request it answers.

Refused as ambiguous (HTTP 400, JSON-RPC error, nothing forwarded): a decided method sent as a
notification, params that are not an object, a name or URI that is not a string, a method name
that is a case/whitespace/Unicode variant of a known one, and Mcp-Method/Mcp-Name headers that do
not match the body (code -32020). A batch is refused whole if any of its messages is refused."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from mitmproxy import http

from ..headers import header, header_values
from ..context import Decision, FlowContext
from ..protocol.jsonrpc import (INVALID_PARAMS, INVALID_REQUEST, JsonRpcParseError, Message, canonical_method,
                                dumps)
from ..responses import denied_with_reason, insufficient_scope, json_response, jsonrpc_error, jsonrpc_errors_response
from ..sessions.caller import caller_key
from . import annotate, ledger
from .acl import CompiledAcl, route_acl
from .engine import SubjectView, Verdict, audience, view
from .filtering import LIST_RESULTS, ResponseGovernor
from .ledger import Expected, id_key

log = logging.getLogger("mcpgw.governance")

HEADER_MISMATCH = -32020  # MCP: Mcp-Method / Mcp-Name header does not match the body

# method -> (primitive, the params member naming it)
CALLS: dict[str, tuple[str, str]] = {
    "tools/call": ("tool", "name"),
    "prompts/get": ("prompt", "name"),
    "resources/read": ("resource", "uri"),
    "resources/subscribe": ("resource", "uri"),
}
COMPLETION_REFS = {"ref/prompt": ("prompt", "name"), "ref/resource": ("resource", "uri")}
TASK_FOLLOW_UPS = frozenset({"tasks/get", "tasks/result", "tasks/cancel"})
DECIDED = frozenset(CALLS) | TASK_FOLLOW_UPS | {"completion/complete"}
NAME_HEADER_PARAM = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri",
                     "resources/subscribe": "uri", "resources/unsubscribe": "uri"}
NOUNS = {"tool": "Tool", "prompt": "Prompt", "resource": "Resource", "task": "Task"}


@dataclass(slots=True)
class Checked:
    """One client message after classification."""

    message: Message
    decision: Decision | None = None  # None: not governed (initialize, ping, responses, ...)
    error: dict[str, Any] | None = None  # the answer if this message is refused
    malformed: bool = False
    expected: Expected | None = None  # its answer creates a task to remember

    @property
    def denied(self) -> bool:
        return self.decision is not None and not self.decision.allowed


class Enforcer:
    """Classifies the messages of one request."""

    def __init__(self, ctx: FlowContext, acl: CompiledAcl, subject_view: SubjectView):
        self.ctx = ctx
        self.acl = acl
        self.view = subject_view
        self.route = ctx.route_name or ""
        self.caller = ctx.caller or ""

    def check(self, message: Message) -> Checked:
        method = message.method
        if method is None:
            return Checked(message)  # the client answering a server request
        try:
            canonical_method(method)
        except JsonRpcParseError as e:
            return self._malformed(message, e.code, e.message)
        if method in LIST_RESULTS:
            primitive = LIST_RESULTS[method][2]
            decision = Decision(True, method, primitive, rule="acl", reason="list", message_id=message.id)
            return Checked(message, decision)
        if method not in DECIDED:
            return Checked(message)
        if message.kind != "request":
            return self._malformed(message, INVALID_REQUEST, f"{method} must be a request with an id, not a notification")
        params = message.params
        if type(params) is not dict:
            return self._malformed(message, INVALID_PARAMS, f"{method} params must be an object")
        if method in TASK_FOLLOW_UPS:
            return self._task_follow_up(message, params)
        if method == "completion/complete":
            ref = params.get("ref")
            target = COMPLETION_REFS.get(ref.get("type")) if type(ref) is dict else None
            if target is None:
                return self._malformed(message, INVALID_PARAMS, "params.ref must be a ref/prompt or ref/resource object")
            primitive, member = target
            name, where = ref.get(member), f"params.ref.{member}"
        else:
            primitive, member = CALLS[method]
            name, where = params.get(member), f"params.{member}"
        if type(name) is not str:
            return self._malformed(message, INVALID_PARAMS, f"{method}: {where} must be a string")
        verdict = self.view.decide(primitive, name)
        expected = None
        if method == "tools/call" and "task" in params:  # task-augmented: remember the task it creates
            expected = Expected(method, name, verdict.allowed)
        return self._decided(message, primitive, name, verdict, expected)

    def _task_follow_up(self, message: Message, params: dict[str, Any]) -> Checked:
        task_id = params.get("taskId")
        if type(task_id) is not str:
            return self._malformed(message, INVALID_PARAMS, f"{message.method}: params.taskId must be a string")
        origin = ledger.tasks.get((self.route, self.caller, task_id))
        if origin is None:
            verdict, reason = Verdict(False, "tasks: not created through the gateway for this caller"), "unknown task"
        elif not origin.allowed:
            verdict, reason = Verdict(False, "tasks: created by a denied call"), "acl"
        else:
            verdict, reason = self.view.tool(origin.tool), "acl"  # re-decided: the policy may have changed
        decision = self._decision(message, "tool", origin.tool if origin else None, verdict, reason)
        return Checked(message, decision, None if decision.allowed else self._denial(message, "task", task_id))

    def _decided(self, message: Message, primitive: str, name: str, verdict: Verdict,
                 expected: Expected | None) -> Checked:
        decision = self._decision(message, primitive, name, verdict, "acl")
        error = None if verdict.allowed else self._denial(message, primitive, name)
        return Checked(message, decision, error, expected=expected)

    def _decision(self, message: Message, primitive: str, name: str | None, verdict: Verdict, reason: str) -> Decision:
        return Decision(verdict.allowed, message.method, primitive, name, verdict.rule, reason, message.id,
                        shadow=self.acl.shadow and not verdict.allowed)

    def _denial(self, message: Message, noun: str, name: str) -> dict[str, Any]:
        text = f"{NOUNS[noun]} '{annotate.printable(name, 256)}' is not available for {self._audience()}"
        return jsonrpc_error(message.id, INVALID_PARAMS, text)

    def _audience(self) -> str:
        return audience(self.ctx.identity, self.acl)

    def _malformed(self, message: Message, code: int, text: str) -> Checked:
        decision = Decision(False, message.method, None, None, "malformed", "malformed", message.id)
        message_id = message.id if id_key(message.id) is not None else None
        return Checked(message, decision, jsonrpc_error(message_id, code, text), malformed=True)


def enforce_acl(ctx: FlowContext, flow: http.HTTPFlow) -> http.Response | None:
    """The phase (pipeline: governance)."""
    acl = route_acl(ctx.snapshot.policy, ctx.route_name) if ctx.match is not None else None
    if acl is None:
        return None  # ungoverned route
    req = flow.request
    subject_view = view(acl, ctx.identity, ctx.token_claims)
    caller = annotate.caller_label(ctx.identity)
    owner = caller_key(ctx, req)
    if req.method != "POST":
        if req.raw_content:
            return json_response(400, {"message": f"a request body is only accepted on POST, not on {req.method}"})
        if req.method == "GET":  # a server stream: list results arriving there are filtered too
            ctx.server_transforms.append(ResponseGovernor(flow, ctx.route_name or "", subject_view, caller, owner))
        return None
    if not ctx.messages:  # inbound parsing did not run or found nothing: nothing can be decided
        return json_response(400, {"message": "the request body holds no JSON-RPC message"})
    limit = acl.settings.max_request_body_size
    if limit is not None and len(req.raw_content or b"") > limit:
        return json_response(413, {"message": f"Request body is larger than {limit} bytes"})
    if (mismatch := _routing_header_mismatch(ctx, flow)) is not None:
        first = ctx.messages[0]
        ctx.decisions.append(Decision(False, first.method, rule="headers", reason="header mismatch",
                                      message_id=first.id))
        annotate.note(flow, f"{caller} request: DENIED (header mismatch)")
        annotate.mark(flow, denied=True)
        return jsonrpc_errors_response(req, [mismatch], status=400)

    enforcer = Enforcer(ctx, acl, subject_view)
    checks = [enforcer.check(m) for m in ctx.messages]
    malformed = any(c.malformed for c in checks)
    denied = any(c.denied for c in checks) and not acl.shadow
    if ctx.is_batch and (malformed or denied):  # refused whole: nothing in it goes through
        for c in checks:
            if c.decision is not None and c.decision.allowed:
                c.decision = replace(c.decision, allowed=False, rule="batch", reason="batch refused")
    decisions = [c.decision for c in checks if c.decision is not None]
    ctx.decisions.extend(decisions)
    annotate.annotate(flow, caller, decisions)

    if malformed:
        return _refusal(ctx, flow, checks, 400)
    if any(c.denied for c in checks):
        log.info("route %s: %s %s: %s", ctx.route_name, "would deny" if acl.shadow else "denied", caller,
                 ", ".join(f"{c.decision.method} {c.decision.name}" for c in checks if c.denied))
    if denied:
        if acl.settings.deny_response == "http403":
            return _forbidden(ctx, flow, checks)
        if ctx.is_batch or _reads_post_answers(req):
            return _refusal(ctx, flow, checks, 200)
        stand_in = _stand_in(ctx, flow, checks[0], owner)  # legacy transport: the answer travels on the GET stream
        checks = []  # the stand-in ping is all that goes upstream
    else:
        stand_in = None
    _govern_answers(ctx, flow, subject_view, caller, owner, checks, stand_in)
    return None


def _refusal(ctx: FlowContext, flow: http.HTTPFlow, checks: list[Checked], status: int,
             headers: dict[str, str] | None = None) -> http.Response:
    """Answer every request of the body: its own error, or (batch) that it was not forwarded."""
    errors = []
    for c in checks:
        if c.error is not None:
            errors.append(c.error)
        elif c.message.kind == "request":
            errors.append(jsonrpc_error(c.message.id, INVALID_REQUEST,
                                        "Not forwarded: another message of this batch was refused"))
    return jsonrpc_errors_response(flow.request, errors, batch=ctx.is_batch, status=status, headers=headers)


def _forbidden(ctx: FlowContext, flow: http.HTTPFlow, checks: list[Checked]) -> http.Response:
    """`deny_response: http403`: the gateway's reason as error_description, in the challenge and in
    each denial's `data`, since clients that treat 403 insufficient_scope as a scope upgrade drop
    the JSON-RPC message (docs/governance.md)."""
    denials = [c for c in checks if c.denied and c.error is not None]
    text = denials[0].error["error"]["message"]
    for c in denials:
        c.error = denied_with_reason(c.error)
    return _refusal(ctx, flow, checks, 403, insufficient_scope(text))


def _reads_post_answers(req: http.Request) -> bool:
    """Streamable HTTP clients accept SSE and read the POST's answer. Legacy HTTP+SSE clients do
    not: they only check the status and wait for the answer on their GET stream."""
    return "text/event-stream" in header(req.headers, "accept", "").lower()


def _stand_in(ctx: FlowContext, flow: http.HTTPFlow, denied: Checked, owner: str) -> str:
    """Replace the denied message by a harmless ping under a one-time id; whichever stream the
    upstream answers it on, the governor turns the answer into the denial."""
    assert denied.error is not None
    token = ledger.new_stand_in(ctx.route_name or "", owner, denied.message.id, denied.error)
    flow.request.content = dumps({"jsonrpc": "2.0", "id": token, "method": "ping"})
    for name in ("mcp-method", "mcp-name"):
        flow.request.headers.pop(name, None)
    return token


def _govern_answers(ctx: FlowContext, flow: http.HTTPFlow, subject_view: SubjectView, caller: str, owner: str,
                    checks: list[Checked], stand_in: str | None) -> None:
    """Install this flow's response governor: whatever the POST asked, an answer with the shape
    of a list is filtered (the upstream decides which stream carries which answer, and ids are
    the client's). Task-augmented calls are remembered by id for the answer that names the task;
    filtering.correlate_accepted shares them with the session's other streams once the upstream
    has accepted the POST."""
    expected: dict[tuple[type, Any], Expected] = {}
    for c in checks:
        if c.expected is not None and (key := id_key(c.message.id)) is not None:
            expected[key] = expected[key].merged(c.expected) if key in expected else c.expected
    ctx.server_transforms.append(ResponseGovernor(flow, ctx.route_name or "", subject_view, caller, owner,
                                                  expected, (stand_in,) if stand_in else ()))


def _routing_header_mismatch(ctx: FlowContext, flow: http.HTTPFlow) -> dict[str, Any] | None:
    """The newest MCP revision repeats the method and name in Mcp-Method / Mcp-Name headers for
    routers. The gateway decides on the body only, and refuses a request whose headers say
    something else (a router trusting them would see another request than the server)."""
    headers = flow.request.headers
    methods, names = header_values(headers, "mcp-method"), header_values(headers, "mcp-name")
    if not methods and not names:
        return None
    message = ctx.messages[0] if len(ctx.messages) == 1 and not ctx.is_batch else None
    if message is None:
        problem = "Mcp-Method and Mcp-Name headers describe a single message, not a batch"
    elif len(methods) > 1 or len(names) > 1:
        problem = "Mcp-Method and Mcp-Name headers must not be repeated"
    elif methods and methods[0] != message.method:
        problem = "Mcp-Method header does not match the method in the body"
    elif names and names[0] != _named(message):
        problem = "Mcp-Name header does not match the name in the body"
    else:
        return None
    message_id = message.id if message is not None and id_key(message.id) is not None else None
    return jsonrpc_error(message_id, HEADER_MISMATCH, problem)


def _named(message: Message) -> str | None:
    member = NAME_HEADER_PARAM.get(message.method or "")
    params = message.params
    return params.get(member) if member and type(params) is dict else None
