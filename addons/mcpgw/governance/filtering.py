"""Server -> client: list results filtered through the same verdicts that govern calls.

A `ResponseGovernor` is one flow's server transform (see context.server_transforms). It handles
each JSON-RPC response by the method of the request it answers when that is known (the POST's own
messages, or `ledger.expected` for a GET stream of the same session) and otherwise by the shape
of its result (a `tools`, `prompts`, `resources` or `resourceTemplates` array), which is how list
results on a legacy HTTP+SSE stream are caught. Only the array is replaced: every other member,
the key order and `nextCursor` stay as the upstream sent them, and a page filtered to nothing is
an empty array. Entries that cannot be decided (not an object, no string name) are dropped."""

from __future__ import annotations

import weakref
from typing import Any, Callable

from mitmproxy import http

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


def filter_entries(entries: list[Any], member: str, verdict: Callable[[str], Verdict]) -> list[Any]:
    """The entries the caller may see."""
    return [e for e in entries
            if type(e) is dict and type(name := e.get(member)) is str and verdict(name).allowed]


def _with(obj: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `obj` with one member replaced in place (key order kept)."""
    return {k: (value if k == key else v) for k, v in obj.items()}


class ResponseGovernor:
    """Filters list results and remembers created tasks for one flow."""

    def __init__(self, flow: http.HTTPFlow, route: str, view: SubjectView, caller: str, consumer: str,
                 expected: dict[tuple[type, Any], Expected] | None = None, session: str | None = None):
        self._flow = weakref.ref(flow)  # the flow owns this transform; never keep it alive from here
        self.route = route
        self.view = view
        self.shadow = view.acl.shadow
        self.caller = caller
        self.consumer = consumer
        self.expected = expected or {}
        self.session = session
        self._verdicts = {"tool": view.tool, "prompt": view.prompt, "resource": view.resource}

    def __call__(self, message: dict[str, Any]) -> dict[str, Any]:
        if "method" in message:
            return message  # the server's own requests and notifications
        message_id = message.get("id")
        stand_in = ledger.take_stand_in(self.route, message_id)
        if stand_in is not None:
            return stand_in.error
        expected = self._expected(message_id)
        result = message.get("result")
        if type(result) is not dict:
            return message
        if expected is None:
            methods = [_BY_ARRAY[key] for key in result if key in _BY_ARRAY]
            return self._filter(message, result, methods) if methods else message
        if expected.method in LIST_RESULTS:
            return self._filter(message, result, [expected.method])
        if expected.tool is not None:
            self._remember_task(result, expected)
        return message

    def _expected(self, message_id: Any) -> Expected | None:
        key = id_key(message_id)
        if key is None:
            return None
        found = self.expected.pop(key, None)
        if self.session is not None:
            shared = ledger.expected.pop((self.route, self.session, key))
            found = found or shared
        return found

    def _filter(self, message: dict[str, Any], result: dict[str, Any], methods: list[str]) -> dict[str, Any]:
        new_result = result
        for method in methods:
            array, member, primitive = LIST_RESULTS[method]
            entries = new_result.get(array)
            if type(entries) is not list:
                continue
            kept = filter_entries(entries, member, self._verdicts[primitive])
            self._note(method, len(kept), len(entries))
            if len(kept) != len(entries) and not self.shadow:
                new_result = _with(new_result, array, kept)
        return message if new_result is result else _with(message, "result", new_result)

    def _remember_task(self, result: dict[str, Any], call: Expected) -> None:
        task = result.get("task")
        task_id = task.get("taskId") if type(task) is dict else None
        if type(task_id) is str and call.tool is not None:
            ledger.tasks.put((self.route, self.consumer, task_id), ledger.TaskOrigin(call.tool, call.allowed))

    def _note(self, method: str, kept: int, total: int) -> None:
        flow = self._flow()
        if flow is None:
            return
        hidden = total - kept
        if self.shadow:
            annotate.note(flow, f"{self.caller} {method}: {total} shown, {hidden} WOULD_DENY (shadow)")
            annotate.mark(flow, would_deny=hidden > 0)
        else:
            annotate.note(flow, f"{self.caller} {method}: {kept} of {total} shown (acl)")
