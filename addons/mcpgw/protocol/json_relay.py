"""A JSON answer relayed while it is screened, instead of held whole.

A JSON body that transforms must see is otherwise held until its last byte has arrived
(streaming.py), and holding a large one costs more than judging it: the client gets nothing until
the upstream is done, then the whole body crosses the second hop (docs/integrity.md, Cost). When
every transform of the answer decides "leave these bytes as they are" by one Hyperscan screen
(the secret scanner's, which also looks for the tool lists' keys: integrity/leaks.py), the same
patterns run in stream mode over each chunk as it arrives, and chunks are relayed while nothing
has matched, all but the last TAIL bytes or more (whole chunks are relayed, never copied).
Stream mode finds a match across chunk boundaries and reports it where it ends, so a token the
screen reports within TAIL bytes of its start (every built-in detector's, unless the token itself
is longer) has not begun in what was relayed.

The answer keeps the upstream's Content-Length (chunked framing would cost the client more than
the relay saves), so only answers that declare one, of SMALLEST bytes or more, are relayed. Once a pattern
matches, nothing more is relayed; at the end the whole body is judged as a held one would be
(`judge`: the message layer with the same transforms). Unchanged: the rest follows. Changed: the
first of these that keeps the relayed part byte for byte and is no longer than the declared length
is sent, padded with spaces after the JSON value: the judged body itself, then the transforms' raw
patches (the secret scanner's redaction made on the raw text) applied to the body, if that parses
to what the judge made; then the same redaction with masks as long as what they replace
(`[####]`), if it says what the judge made but for the masks' text. Otherwise the rest is NUL
bytes: the answer ends unparseable, never completed with what the judge would have removed."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from .bytescreen import Patterns

TAIL = 16 * 1024  # bytes always held back: a token reported now began within them (leaks.RELAY_REACH)
SMALLEST = 64 * 1024  # smaller answers are held whole: holding them costs little
FILL = b" "  # JSON allows whitespace after the value: a shorter judged body keeps the declared length
UNPARSEABLE = b"\x00"  # no JSON text holds a raw NUL byte, inside a string or out

Judge = Callable[[bytes], "bytes | None"]  # the held path: the new body, or None when unchanged
Patch = Callable[[bytes], "bytes | None"]
Fit = Callable[[bytes, bytes], "bytes | None"]  # (body, judged): body masked in place, if it says what judged says


def screen_of(transforms: Sequence[object]) -> Patterns | None:
    """The one stream-mode screen every transform is decided by, or None (the answer is held)."""
    screens = {id(s): s for s in (getattr(t, "stream_screen", None) for t in transforms)}
    if len(screens) != 1:
        return None
    (screen,) = screens.values()
    return screen if isinstance(screen, Patterns) and screen.streaming else None


class JsonRelay:
    """mitmproxy's `response.stream` callable for one JSON answer of a declared `length` (mitmproxy
    reads exactly that many bytes from the upstream, and streaming.py relays none larger than
    it would hold)."""

    def __init__(self, screen: Patterns, length: int, judge: Judge, patches: Sequence[Patch],
                 on_cut: Callable[[str], None], tail: int = TAIL, fits: Sequence[Fit] = ()):
        self._screening = screen.open()
        self._length = length  # the declared Content-Length, which the client reads to
        self._judge, self._patches, self._on_cut, self._tail = judge, tuple(patches), on_cut, tail
        self._fits = tuple(fits)
        self._chunks: list[bytes] = []  # the whole body, should it have to be judged
        self._size = 0
        self._sent = 0  # bytes relayed
        self._next = 0  # the first chunk not relayed
        self._matched = False  # a pattern occurred: the rest waits for the judge

    def __call__(self, chunk: bytes) -> list[bytes]:
        if not chunk:
            return self._finish()
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._matched:
            return []
        if self._screening.feed(chunk):
            self._matched = True
            return []
        out: list[bytes] = []
        held = self._size - self._sent
        while self._next < len(self._chunks) and held - len(self._chunks[self._next]) >= self._tail:
            first = self._chunks[self._next]
            out.append(first)
            self._sent += len(first)
            held -= len(first)
            self._next += 1
        return out

    def _finish(self) -> list[bytes]:
        self._screening.close()
        rest = self._chunks[self._next:]
        if not self._matched:
            return rest
        body = b"".join(self._chunks)
        new = self._judge(body)
        if new is None:
            return rest
        for candidate in self._candidates(body, new):
            if len(candidate) <= self._length and candidate[:self._sent] == body[:self._sent]:
                return [candidate[self._sent:] + FILL * (self._length - len(candidate))]
        self._on_cut(f"the judged answer does not fit what was relayed ({self._sent} bytes) and "
                     f"the declared length ({self._length} bytes)")
        return [UNPARSEABLE * (self._length - self._sent)]

    def _candidates(self, body: bytes, new: bytes):
        yield new
        patched: bytes | None = body
        for patch in self._patches:
            patched = patch(patched) if patched is not None else None
        if patched is not None and patched != body and _same_json(patched, new):
            yield patched
        for fit in self._fits:  # masks as long as what they replace: the declared length, always
            fitted = fit(body, new)
            if fitted is not None:
                yield fitted


def _same_json(a: bytes, b: bytes) -> bool:
    try:
        return json.loads(a) == json.loads(b)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
