"""Keep client-chosen values from forging lines in the gateway's log.

Log records quote what clients send: tool names, header names, token subjects, error messages
about their requests. A value holding a line break would start a log line of the client's choosing
("...denied dev-user: tools/call push_files\\n[12:00:00][mcpgw] allowed admin-user..."), and one
holding an ANSI escape could rewrite the operator's terminal. EscapingFilter sits on every gateway
logger, before RedactingFilter: it escapes control characters in a record's arguments (the
values; format strings are the gateway's own) and in the messages of a logged exception, whose
frames (the gateway's code) it leaves as Python prints them."""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Mapping
from typing import Any

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators (line breaks to some viewers).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_PLAIN = (int, float, type(None))  # formatted with %d / %f: nothing to escape, and they must stay numbers


def _escaped_char(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape(text: str) -> str:
    """`text` with every control character written as an escape (`\\n`, `\\x1b`, `\\u2028`)."""
    return _CONTROL.sub(_escaped_char, text) if _CONTROL.search(text) else text


class _Escaped:
    """An argument that is neither a string nor a number: escaped when %s or %r formats it."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return escape(str(self.value))

    def __repr__(self) -> str:
        return escape(repr(self.value))


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    return value if isinstance(value, _PLAIN) else _Escaped(value)


def format_exception(exc_info: tuple) -> str:
    """The traceback `logging` would print, with the exception messages escaped."""
    kind, value, tb = exc_info
    return "".join(_chunks(traceback.TracebackException(kind, value, tb, compact=True), set())).rstrip("\n")


def _chunks(te: traceback.TracebackException, seen: set[int]):
    seen.add(id(te))
    if te.__cause__ is not None and id(te.__cause__) not in seen:
        yield from _chunks(te.__cause__, seen)
        yield "\nThe above exception was the direct cause of the following exception:\n\n"
    elif te.__context__ is not None and not te.__suppress_context__ and id(te.__context__) not in seen:
        yield from _chunks(te.__context__, seen)
        yield "\nDuring handling of the above exception, another exception occurred:\n\n"
    if te.stack:
        yield "Traceback (most recent call last):\n"
        yield from te.stack.format()
    for line in te.format_exception_only():
        yield escape(line.removesuffix("\n")) + "\n"
    for member in te.exceptions or ():  # an exception group: each member in turn
        yield from _chunks(member, seen)


class EscapingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(_safe(a) for a in args)
        elif isinstance(args, Mapping) and args:  # log.info("%(name)s", {"name": ...})
            record.args = {k: _safe(v) for k, v in args.items()}
        if not isinstance(record.msg, str):
            record.msg = _safe(record.msg)
        if record.exc_info and not record.exc_text:
            try:
                record.exc_text = format_exception(record.exc_info)
            except Exception:  # noqa: BLE001 - keep logging's own rendering rather than lose the record
                pass
        return True
