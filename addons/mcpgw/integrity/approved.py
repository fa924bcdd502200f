"""Tool lists already judged clean, recognised in an answer's raw bytes so that it is not parsed
and judged again (the message layer's `passes`, protocol/messages.py).

A server lists the same catalog over and over; parsing 1,000 tools and hashing each definition
costs several times the relay itself. So when the same list answer is judged twice in a row and
nothing in it is withheld or recorded, the exact bytes of its `tools` array are kept (per route,
at most a few lists). A later answer is passed unparsed when:

1. nothing in it could hide a `"tools"` key or a stand-in id: no `\\u` escape, no NUL byte (a
   UTF-16 or UTF-32 body, which JSON parsers read too), no stand-in prefix;
2. it contains those exact bytes, and
3. with them replaced by a random string, the (now small) rest parses as an answer whose
   `result.tools` is that string: the bytes stand exactly where the list is read, whatever else
   the answer holds (duplicate keys, odd nesting) -- a mere substring match is not trusted.

A kept list is valid only under the settings, scanner and pin store version it was judged with
(a pin added, a lock file reloaded: judged again), and a list judged since that shares a tool
name forgets it: the last verdict about each tool (`pinning.observed`, `scanning.blocked`) must
stay the one the full path set."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from ..governance.ledger import STAND_IN_PREFIX
from ..protocol import bytescreen

MIN_SIZE = 16 * 1024  # smaller lists are cheap to parse: not worth keeping
PER_ROUTE = 8
_SENTINEL = json.dumps(f"mcpgw-approved-{secrets.token_hex(16)}")  # unguessable: the upstream cannot forge it
_SENTINEL_BYTES = _SENTINEL.encode()
_SENTINEL_VALUE = json.loads(_SENTINEL)
_TOOLS_KEY = re.compile(r'"tools"\s*:\s*')
_DECODER = json.JSONDecoder()
# "tools", what could hide it (a \u escape; a NUL byte: UTF-16 or UTF-32, which JSON parsers
# read too), a stand-in id; then the lists pinned when a route asks (pin_also)
SCREEN_LITERALS = (b'"tools"', b"\\u", STAND_IN_PREFIX.encode(), b'"prompts"', b'"resources"',
                   b'"resourceTemplates"', b"\x00")
_SCREEN = bytescreen.Patterns(SCREEN_LITERALS, [True] * len(SCREEN_LITERALS)) if bytescreen.AVAILABLE else None
_OTHERS = frozenset({3, 4, 5})


@dataclass(frozen=True, slots=True)
class Kept:
    key: tuple[Any, ...]  # (settings, store, store version, scanner): what the verdict depends on
    text: bytes
    names: frozenset[str]


_kept: dict[str, list[Kept]] = {}
_tails: dict[str, bytes] = {}  # route -> digest of the last clean list answer from its "tools" on


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return len(a) == len(b) and all(x is y or (type(x) is int and x == y) for x, y in zip(a, b))


def passes(route: str, key: tuple[Any, ...], data: bytes, others: bool = False,
           found: set[int] | None = None) -> bool:
    """Whether an answer's raw bytes certainly need no judging: no list in them, or a kept one.
    `others`: prompts and resources are pinned too, so an answer naming their lists is judged.
    `found`: which of SCREEN_LITERALS occur in `data`, when a pass over it already told."""
    if found is None:
        if _SCREEN is None:
            return False
        found = _SCREEN.present(data)
    if others and found & _OTHERS:
        return False
    found -= _OTHERS
    if not found:
        return True  # no "tools" key can be spelled without those bytes or a \u escape
    if found != {0}:
        return False
    for kept in _kept.get(route, ()):
        if not _same(kept.key, key):
            continue
        start = data.find(kept.text[:64])
        for _ in range(4):  # the head may occur elsewhere first (a tool's text quoting it)
            if start < 0:
                break
            if data.startswith(kept.text, start):
                return _is_the_list(data[:start] + _SENTINEL_BYTES + data[start + len(kept.text):])
            start = data.find(kept.text[:64], start + 1)
    return False


def _is_the_list(rest: bytes) -> bool:
    try:
        obj = json.loads(rest)
    except ValueError:
        return False
    if type(obj) is not dict or "method" in obj:
        return False
    result = obj.get("result")
    return type(result) is dict and result.get("tools") == _SENTINEL_VALUE


def judged(route: str, key: tuple[Any, ...], tools: list[Any], clean: bool, data: bytes | None) -> None:
    """After the full path judged a list: forget kept lists naming its tools; keep this one if
    nothing of it was withheld or recorded and its bytes (`data`, the raw answer) are known."""
    names = frozenset(t["name"] for t in tools if type(t) is dict and type(t.get("name")) is str)
    kept = [k for k in _kept.get(route, ()) if not k.names & names]
    text = _find(data, tools) if clean and data is not None and len(data) >= MIN_SIZE and _again(route, data) else None
    if text is not None:
        kept = [Kept(key, text, names), *kept][:PER_ROUTE]
    if kept:
        _kept[route] = kept
    else:
        _kept.pop(route, None)


def _again(route: str, data: bytes) -> bool:
    """Whether this answer repeats the last clean one of the route from its list on (ids
    differ): finding the list's bytes parses it once more, worth it only for a list that recurs,
    not for one an upstream varies every time."""
    at = data.find(b'"tools"')
    tail = hashlib.sha256(data[at:]).digest() if at >= 0 else b""
    if _tails.get(route) == tail:
        return True
    _tails[route] = tail
    return False


def _find(data: bytes, tools: list[Any]) -> bytes | None:
    """The exact bytes of the array `tools` was parsed from, if `data` holds it."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    for i, m in enumerate(_TOOLS_KEY.finditer(text)):
        if i >= 8:
            break
        try:
            value, end = _DECODER.raw_decode(text, m.end())
        except ValueError:
            continue
        if type(value) is list and value == tools:
            return text[m.end():end].encode("utf-8")  # valid UTF-8 round-trips to the same bytes
    return None


def clear() -> None:
    _kept.clear()
    _tails.clear()
