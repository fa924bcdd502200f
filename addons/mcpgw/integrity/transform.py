"""Server -> client: hold every list answer's tools to what was approved, on every stream of the
route (POST answers in JSON or SSE, the GET stream of the legacy transport), whatever request
the answer claims to answer, like the ACL's filtering (governance/filtering.py).

- pinning: a tool whose definition differs from its pin (or has none, in lock mode) is withheld;
- scanning: a tool with a finding whose severity's action is `block` is withheld, `flag` only
  records it.

Installed after the ACL governor, so it judges only what the caller may see: trust on first use
never pins a tool on the word of a list the caller could not see anyway. Notifications
(`notifications/tools/list_changed`) pass; the next list is judged. Shadow modes keep every
tool and record what would have been withheld."""

from __future__ import annotations

import weakref
from typing import Any, Callable

from mitmproxy import http

from .. import context
from ..governance import annotate, ledger
from ..state.pins import PinStore
from . import approved, record
from .digest import tool_digest
from .kinds import TOOLS, Kind, also
from .pinning import judge
from .scanning import Scanner, blocked
from .settings import IntegritySettings


class ToolTransform:
    def __init__(self, flow: http.HTTPFlow, route: str, settings: IntegritySettings, store: PinStore | None,
                 scanner: Scanner | None, caller: str, screen: Callable[[bytes], set[int] | None] | None = None):
        self._flow = weakref.ref(flow)  # the flow owns this transform
        self.route = route
        self.settings = settings
        self.store = store  # None: pinning off
        self.scanner = scanner  # None: scanning off
        self.caller = caller
        self.screen = screen  # the secret scanner's pass, which also looks for approved.SCREEN_LITERALS
        self.pin_shadow = settings.pin == "shadow"
        self.others = also(settings.pin_also) if store is not None else ()  # prompts, resources: pinned too
        self._raw: bytes | None = None  # the bytes `passes` saw last: the full path keeps a clean list's
        self.stream_screen = None  # set by phases.py when `screen` is the secret scanner's (json_relay.py)

    def _key(self) -> tuple:
        return (self.settings, self.store, self.store.version if self.store is not None else 0, self.scanner)

    def passes(self, data: bytes) -> bool:
        """protocol/messages.py: an answer with no list, or with a list judged clean before, passes unparsed."""
        self._raw = data
        found = self.screen(data) if self.screen is not None else None
        return approved.passes(self.route, self._key(), data, bool(self.others), found)

    def __call__(self, message: dict[str, Any]) -> dict[str, Any]:
        if "method" in message:
            return message
        stand_in = ledger.take_stand_in(self.route, self.caller, message.get("id"))
        if stand_in is not None:  # a call refused here, on the legacy transport (phases.py)
            return stand_in.error
        result = message.get("result")
        if type(result) is not dict:
            return message
        new = self._tools(result) if "tools" in result else result
        for kind in self.others:
            if kind.list_key in new:
                new = self._entries(kind, new)
        if new is result:
            return message
        return {k: (new if k == "result" else v) for k, v in message.items()}  # key order kept

    def _tools(self, result: dict[str, Any]) -> dict[str, Any]:
        tools = result["tools"]
        if type(tools) is not list:
            return {**result, "tools": []}  # not a list a client could read as one
        # one canonical encoding per tool and list, shared by the pin and the scan cache
        digests = {id(t): tool_digest(t) for t in tools if type(t) is dict and type(t.get("name")) is str}
        findings = self.scanner.scan_list(tools, digests) if self.scanner is not None else {}
        kept: list[Any] = []
        records: list[dict[str, Any]] = []
        notes: list[str] = []
        hidden = 0
        for tool in tools:
            if type(tool) is not dict or type(tool.get("name")) is not str:
                continue  # nothing to judge it by: not shown
            withhold = False
            if self.store is not None:
                j = judge(self.store, self.route, tool, self.settings, digests[id(tool)])
                if j.withheld:
                    records.append(j.record("would_withhold" if self.pin_shadow else "withheld"))
                    notes.append(f"{annotate.printable(j.name)} {j.status}" + (f" ({', '.join(j.fields)})" if j.fields else ""))
                    withhold |= not self.pin_shadow
            if self.scanner is not None:
                withhold |= self._scanned(tool, digests[id(tool)], findings.get(tool["name"], ()), records, notes)
            if withhold:
                hidden += 1
            else:
                kept.append(tool)
        if self.store is not None:
            self.store.flush()  # trust on first use: the pins of this list, in one write
        raw, self._raw = self._raw, None
        approved.judged(self.route, self._key(), tools, not records and len(kept) == len(tools), raw)
        if records:
            self._note(records, notes, hidden, len(tools), TOOLS.list_method)
        if len(kept) == len(tools):
            return result
        return {k: (kept if k == "tools" else v) for k, v in result.items()}  # key order kept

    def _entries(self, kind: Kind, result: dict[str, Any]) -> dict[str, Any]:
        """Prompts, resources or resource templates: held to their pins like tools (not scanned)."""
        entries = result[kind.list_key]
        if type(entries) is not list:
            return {**result, kind.list_key: []}
        assert self.store is not None
        kept, records, notes = [], [], []
        for entry in entries:
            if type(entry) is not dict or kind.key(entry) is None:
                continue  # nothing to judge it by: not shown
            j = judge(self.store, self.route, entry, self.settings, kind=kind)
            if j.withheld:
                records.append(j.record("would_withhold" if self.pin_shadow else "withheld"))
                notes.append(f"{annotate.printable(j.bare)} {j.status}" + (f" ({', '.join(j.fields)})" if j.fields else ""))
                if not self.pin_shadow:
                    continue
            kept.append(entry)
        self.store.flush()
        if records:
            self._note(records, notes, len(entries) - len(kept), len(entries), kind.list_method)
        if len(kept) == len(entries):
            return result
        return {k: (kept if k == kind.list_key else v) for k, v in result.items()}

    def _scanned(self, tool: dict, digest: str, found: tuple, records: list, notes: list) -> bool:
        """Record a tool's scan findings; whether they withhold it."""
        name = tool["name"]
        scan = self.settings.scan
        assert scan is not None
        blocking = tuple(f.rule for f in found if scan.action(f.severity) == "block")
        if blocking:
            blocked.put((self.route, name), (digest, blocking))
        elif blocked.get((self.route, name)) is not None:
            blocked.pop((self.route, name))  # listed again without a blocking finding: callable again
        if not found:
            return False
        shadow = scan.mode == "shadow"
        would = any(scan.actions.get(f.severity) == "block" for f in found) and shadow
        action = "withheld" if blocking else ("would_withhold" if would else "flagged")
        records.append({"check": "integrity.scan", "tool": name, "action": action,
                        "findings": [f.record() for f in found]})
        notes.append(f"{annotate.printable(name)} {action.upper()} ({', '.join(f'{f.rule}:{f.severity}' for f in found)})")
        return bool(blocking)

    def _note(self, records: list, notes: list, hidden: int, total: int, method: str) -> None:
        flow = self._flow()
        if flow is None:
            return
        ctx = context.get(flow)
        if ctx is not None:
            record(ctx, *records)
        shown = "; ".join(notes[:10]) + (f"; and {len(notes) - 10} more" if len(notes) > 10 else "")
        annotate.note(flow, f"integrity {method}: {hidden} of {total} WITHHELD: {shown}")
        annotate.mark(flow, denied=hidden > 0, would_deny=hidden == 0)

