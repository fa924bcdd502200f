"""What a governed flow shows in mitmweb: a `flow.comment` line per decision, e.g.

    dev-user [developer] tools/call push_files: DENIED (acl)

and a marker on flows with a denial (⛔ `:no_entry:`) or, in shadow mode, a would-be denial
(⚠ `:warning:`). Filter with `~comment DENIED`, `~comment WOULD_DENY`, `~marked` or
`~marker no_entry`."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from mitmproxy import http

if TYPE_CHECKING:
    from ..context import Decision
    from ..identity.consumers import Identity

DENIED_MARKER = ":no_entry:"
WOULD_DENY_MARKER = ":warning:"
_MAX_NAME = 120


def caller_label(identity: "Identity | None") -> str:
    if identity is None:
        return "anonymous"
    return _label(identity)


@functools.lru_cache(maxsize=4096)  # identities are immutable, and a few callers make most calls
def _label(identity: "Identity") -> str:
    return f"{identity.username} [{', '.join(identity.groups)}]" if identity.groups else identity.username


def printable(text: str, limit: int = _MAX_NAME) -> str:
    """A client-chosen name, safe to show on one line."""
    if len(text) < limit and text.isprintable():
        return text
    text = "".join(ch if ch.isprintable() else "\ufffd" for ch in text[:limit])
    return text + "..." if len(text) >= limit else text


def verdict_label(decision: "Decision") -> str:
    if decision.allowed:
        return "allowed"
    return "WOULD_DENY" if decision.shadow else "DENIED"


def describe(caller: str, decision: "Decision") -> str:
    target = f" {printable(decision.name)}" if decision.name is not None else ""
    return f"{caller} {decision.method}{target}: {verdict_label(decision)} ({decision.reason})"


def note(flow: http.HTTPFlow, line: str) -> None:
    flow.comment = f"{flow.comment}\n{line}" if flow.comment else line


def mark(flow: http.HTTPFlow, *, denied: bool = False, would_deny: bool = False) -> None:
    if denied:
        flow.marked = DENIED_MARKER
    elif would_deny and not flow.marked:
        flow.marked = WOULD_DENY_MARKER


def annotate(flow: http.HTTPFlow, caller: str, decisions: list["Decision"]) -> None:
    """One comment line for the decisions of a request (several messages: joined by '; ')."""
    shown = [d for d in decisions if d.reason != "list"]  # list results are noted when filtered
    if not shown:
        return
    note(flow, "; ".join(describe(caller, d) for d in shown))
    mark(flow, denied=any(not d.allowed and not d.shadow for d in shown),
         would_deny=any(not d.allowed and d.shadow for d in shown))
