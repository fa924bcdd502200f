"""Server -> client: list results filtered through the same verdicts that govern calls.

A `ResponseGovernor` is one flow's server transform (see context.server_transforms), installed on
every POST and GET of a governed route. Every JSON-RPC response whose result has the shape of a
list answer (a `tools`, `prompts`, `resources` or `resourceTemplates` member, any or all of them)
is filtered for this flow's caller, whatever request it claims to answer: ids and sessions are
the client's choice, so nothing correlated through them can exempt an answer (a replay after
Last-Event-ID, a `tasks/result`, an answer on the legacy GET stream are filtered alike). Only
the arrays are replaced: every other member, the key order and `nextCursor` stay as the upstream
sent them, a page filtered to nothing is an empty array, and a member that is not an array
becomes an empty one. Entries that cannot be decided (not an object, no string name) are dropped.

A `tasks` member (a tasks/list answer) keeps only the tasks this caller created through the
gateway (ledger.tasks), whatever the upstream lists: one injected credential makes all callers
one requestor to the upstream.

Correlation is used for what shape cannot tell: the task a task-augmented call creates (so its
follow-ups are decided like the call), and the legacy transport's stand-ins (ledger.py).
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

from mitmproxy import http

from .. import context
from ..context import FlowContext
from ..protocol import bytescreen
from . import annotate, ledger
from .engine import SubjectView, Verdict
from .ledger import Expected, id_key

# list method -> (result array, the member naming each entry, primitive)
LIST_RESULTS: dict[str, tuple[str, str, str]] = {
    "tools/list": ("tools", "name", "tool"),
    "prompts/list": ("prompts", "name", "prompt"),
    "resources/list": ("resources", "uri", "resource"),
    "resources/templates/list": ("resourceTemplates", "uriTemplate", "resource"),
}
_BY_ARRAY = {array: method for method, (array, _, _) in LIST_RESULTS.items()}

# What an answer the governor acts on cannot be written without: a list member, a created task
# (remembered from the answer), a stand-in id, or what could spell one otherwise (a \u escape; a
# NUL byte: a UTF-16 or UTF-32 body)
_SCREEN_LITERALS = [*(f'"{a}"'.encode() for a in _BY_ARRAY), b'"task"', b'"tasks"', ledger.STAND_IN_PREFIX.encode(),
                    b"\\u", b"\x00"]
_SCREEN = bytescreen.Patterns(_SCREEN_LITERALS, [True] * len(_SCREEN_LITERALS)) if bytescreen.AVAILABLE else None

# Other concerns that read list answers as they pass, unfiltered: (route, list method, entries).
# ai/catalog.py keeps a passthrough route's tool names from them. An observer must be quick.
LIST_OBSERVERS: list[Callable[[str, str, list[Any]], None]] = []


def filter_entries(entries: list[Any], member: str, verdict: Callable[[str], Verdict]) -> list[Any]:
    """The entries the caller may see."""
    return [e for e in entries
            if type(e) is dict and type(name := e.get(member)) is str and verdict(name).allowed]


def _with(obj: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `obj` with one member replaced in place (key order kept)."""
    return {k: (value if k == key else v) for k, v in obj.items()}


class ResponseGovernor:
    """Filters list results and remembers created tasks for one flow."""

    def __init__(self, flow: http.HTTPFlow, route: str, view: SubjectView, label: str, caller: str,
                 expected: dict[tuple[type, Any], Expected] | None = None, stand_ins: tuple[str, ...] = ()):
        self._flow = weakref.ref(flow)  # the flow owns this transform; never keep it alive from here
        self.route = route
        self.view = view
        self.shadow = view.acl.shadow
        self.label = label  # the caller as flow comments show it
        self.caller = caller  # the caller as the ledger keys it (sessions.caller)
        self.expected = expected or {}  # this POST's own task-augmented calls, by JSON-RPC id
        self.stand_ins = stand_ins  # this POST's stand-in ids (legacy transport)
        self._verdicts = {"tool": view.tool, "prompt": view.prompt, "resource": view.resource}

    def passes(self, data: bytes) -> bool:
        """protocol/messages.py: bytes holding no list, no task and no stand-in's answer pass unparsed."""
        return _SCREEN is not None and not _SCREEN.present(data)

    def __call__(self, message: dict[str, Any]) -> dict[str, Any]:
        if "method" in message:
            return message  # the server's own requests and notifications
        message_id = message.get("id")
        stand_in = ledger.take_stand_in(self.route, self.caller, message_id)
        if stand_in is not None:
            return stand_in.error
        result = message.get("result")
        if type(result) is not dict:
            return message
        arrays = [key for key in result if key in _BY_ARRAY]
        if arrays:
            message = self._filter(message, result, arrays)
        if "tasks" in result:
            message = self._own_tasks(message)
        expected = self._expected(message_id)
        if expected is not None and expected.tool is not None:
            self._remember_task(message.get("result"), expected)
        return message

    def _session(self) -> str | None:
        flow = self._flow()
        ctx = context.get(flow) if flow is not None else None
        return ctx.session_id if ctx is not None else None

    def _expected(self, message_id: Any) -> Expected | None:
        key = id_key(message_id)
        if key is None:
            return None
        found = self.expected.pop(key, None)
        session = self._session()
        if session is not None:  # answered here or on another stream of the session: it is taken
            shared = ledger.expected.pop((self.route, self.caller, session, key))
            found = found or shared
        return found

    def share_accepted(self, session: str | None) -> None:
        """The upstream accepted this POST: its answers may now also arrive on another stream of
        the session (the legacy GET stream, a resumed one)."""
        if session is not None:
            for key, exp in self.expected.items():
                ledger.expected.put((self.route, self.caller, session, key), exp)

    def drop_stand_ins(self) -> None:
        """The upstream refused this POST: its stand-ins will never be answered."""
        for token in self.stand_ins:
            ledger.stand_ins.pop(token)

    def _filter(self, message: dict[str, Any], result: dict[str, Any], arrays: list[str]) -> dict[str, Any]:
        new_result = result
        for array in arrays:
            method = _BY_ARRAY[array]
            _, member, primitive = LIST_RESULTS[method]
            entries = new_result.get(array)
            if type(entries) is not list:  # not a list a client could read as one: shown as none
                new_result = _with(new_result, array, [])
                continue
            for observe in LIST_OBSERVERS:
                observe(self.route, method, entries)
            kept = filter_entries(entries, member, self._verdicts[primitive])
            self._note(method, len(kept), len(entries))
            if len(kept) != len(entries) and not self.shadow:
                new_result = _with(new_result, array, kept)
        return message if new_result is result else _with(message, "result", new_result)

    def _own_tasks(self, message: dict[str, Any]) -> dict[str, Any]:
        """A tasks/list answer (whatever request it claims to answer) shows only the tasks this
        caller created through the gateway: behind a route that injects one credential for every
        caller, the upstream cannot tell its callers' tasks apart."""
        result = message["result"]
        listed = result["tasks"]
        entries = listed if type(listed) is list else []
        kept = [t for t in entries if type(t) is dict and type(task_id := t.get("taskId")) is str
                and ledger.tasks.get((self.route, self.caller, task_id)) is not None]
        if len(kept) == len(entries) and listed is entries:
            return message
        flow, hidden = self._flow(), len(entries) - len(kept)
        if flow is not None and self.shadow:
            annotate.note(flow, f"{self.label} tasks/list: {len(entries)} shown, {hidden} of other callers WOULD_DENY (shadow)")
            annotate.mark(flow, would_deny=True)
        elif flow is not None:
            annotate.note(flow, f"{self.label} tasks/list: {len(kept)} of {len(entries)} shown (the others are not this caller's)")
        return message if self.shadow else _with(message, "result", _with(result, "tasks", kept))

    def _remember_task(self, result: Any, call: Expected) -> None:
        task = result.get("task") if type(result) is dict else None
        task_id = task.get("taskId") if type(task) is dict else None
        if type(task_id) is str and call.tool is not None:
            ledger.tasks.put((self.route, self.caller, task_id), ledger.TaskOrigin(call.tool, call.allowed))

    def _note(self, method: str, kept: int, total: int) -> None:
        flow = self._flow()
        if flow is None:
            return
        hidden = total - kept
        if self.shadow:
            annotate.note(flow, f"{self.label} {method}: {total} shown, {hidden} WOULD_DENY (shadow)")
            annotate.mark(flow, would_deny=hidden > 0)
        else:
            annotate.note(flow, f"{self.label} {method}: {kept} of {total} shown (acl)")


def correlate_accepted(ctx: FlowContext, flow: http.HTTPFlow) -> None:
    """Response headers phase: correlation entries of a POST count once the upstream answered
    it 2xx; a refused POST's are dropped."""
    if flow.request.method != "POST" or not ctx.server_transforms:
        return None
    accepted = ctx.answered_by is None and flow.response is not None and 200 <= flow.response.status_code < 300
    for t in ctx.server_transforms:
        if isinstance(t, ResponseGovernor):
            if accepted:
                t.share_accepted(ctx.session_id)
            else:
                t.drop_stand_ins()
    return None
