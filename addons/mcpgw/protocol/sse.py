"""Incremental Server-Sent Events codec.

Parsing follows the WHATWG HTML "Server-sent events" interpretation rules
(line endings CRLF, LF or CR; one leading UTF-8 BOM ignored; ``field:value``
with one optional space after the colon; a line without a colon is a field
with an empty value; unknown fields ignored; ``retry`` only when it is all
ASCII digits; an ``id`` containing NUL ignored), with two deliberate
differences that a proxy needs:

* Every blank line ends an *event block*, and every block is returned, even
  one with no ``data`` field (``data`` is then ``None``). A browser would not
  dispatch such a block, but a proxy has to forward it, so nothing is dropped.
  Comment lines (``:...``) belong to the block they appear in: a keep-alive
  such as ``": ping\\n\\n"`` comes back as an event with ``data=None`` and
  ``comments=[" ping"]``; a comment inside a block with data stays attached
  to that event.
* Each event carries ``raw``, the exact bytes it was parsed from, including
  its terminating blank line. Concatenating ``raw`` of every event returned
  by :meth:`SSEParser.feed` and :meth:`SSEParser.flush` reproduces the input
  byte for byte, so events the gateway does not rewrite are forwarded
  untouched.

The one place where bytes and events do not align one to one is a CR at the
very end of a chunk that closes an event: the event is returned at once
(holding it back until the next byte arrives would stall a live stream), and
if the next chunk starts with the LF of that CRLF, the LF becomes the first
byte of the next event's ``raw`` and is not read as an empty line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "SSEError", "SSEEvent", "SSEParser"]

DEFAULT_MAX_EVENT_SIZE = 16 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"
_LF = 0x0A


class SSEError(ValueError):
    """The stream cannot be parsed safely; the caller must fail closed."""


def _split_lines(text: str) -> list[str]:
    """Split on CRLF, LF and CR only (``str.splitlines`` also splits on
    form feeds, U+2028 and others, which SSE treats as ordinary characters)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")


def _field_line(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        # Encoding it would let the value inject extra fields or events.
        raise ValueError(f"SSE {name} must not contain a line break")
    return f"{name}: {value}" if value else f"{name}:"


@dataclass(slots=True)
class SSEEvent:
    """One event block of an SSE stream.

    ``data`` is the ``data`` lines joined with ``"\\n"``, or ``None`` when the
    block has no ``data`` field at all (comment-only and keep-alive blocks).
    ``comments`` holds the block's comment lines without the leading colon.
    ``raw`` is the block exactly as received (empty for events built by hand).
    """

    data: str | None = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)
    raw: bytes = b""

    def encode(self) -> bytes:
        """Serialize with LF line endings and a terminating blank line.

        Comments come first, then ``event``, ``id``, ``retry`` and one
        ``data:`` line per line of ``data``. Raises ``ValueError`` if
        ``event`` or ``id`` contains a line break or ``retry`` is negative.
        """
        lines: list[str] = []
        for comment in self.comments:
            lines.extend(":" + part for part in _split_lines(comment))
        if self.event is not None:
            lines.append(_field_line("event", self.event))
        if self.id is not None:
            lines.append(_field_line("id", self.id))
        if self.retry is not None:
            if self.retry < 0:
                raise ValueError("SSE retry must not be negative")
            lines.append(f"retry: {int(self.retry)}")
        if self.data is not None:
            lines.extend(_field_line("data", part) for part in _split_lines(self.data))
        lines.append("\n")
        return "\n".join(lines).encode("utf-8")


class SSEParser:
    """Incremental SSE parser: feed it chunks split anywhere, get whole events.

    ``feed`` only scans bytes it has not scanned before, so its cost is linear
    in the chunk size however the stream is split; each event is decoded from
    UTF-8 once, when it is complete (invalid sequences become U+FFFD, as the
    SSE specification requires). An event larger than ``max_event_size``
    bytes raises :class:`SSEError`, after which the parser refuses all input.
    """

    __slots__ = (
        "max_event_size",
        "_buf",
        "_body_start",
        "_line_start",
        "_scan_pos",
        "_at_stream_start",
        "_pending_lf",
        "_failed",
        "screen",
    )

    def __init__(self, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        if max_event_size <= 0:
            raise ValueError("max_event_size must be positive")
        self.max_event_size = max_event_size
        self._failed = False
        # Optional: given a complete event's raw bytes, the bytes to hand on in its place when its
        # reader needs no parsed event, else None (messages.SSEStream, ai/answers.LlmStream).
        self.screen: Callable[[bytes], bytes | None] | None = None
        self._reset()

    def _reset(self) -> None:
        # The buffer always starts at the first byte of the current event.
        self._buf = bytearray()
        # Where the current event's lines start: after a BOM, or after the LF
        # of a CRLF whose CR closed the previous event.
        self._body_start = 0
        self._line_start = 0
        # Everything before this offset has been searched for line endings.
        self._scan_pos = 0
        self._at_stream_start = True
        # The last byte scanned was a CR; an LF right after it is part of it.
        self._pending_lf = False

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned as part of an event."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[SSEEvent | bytes]:
        """Add a chunk of the stream; return the events it completes (as bytes, unparsed, those
        that `screen` answers for)."""
        if self._failed:
            raise SSEError("SSE parser already failed")
        if not chunk:
            return []
        buf = self._buf
        buf += chunk
        end = len(buf)

        if self._at_stream_start:
            if end < len(_BOM) and _BOM.startswith(buf):
                return []  # might still turn out to be a BOM
            self._at_stream_start = False
            if buf.startswith(_BOM):
                self._body_start = self._line_start = self._scan_pos = len(_BOM)

        pos = self._scan_pos
        body_start = self._body_start
        line_start = self._line_start
        if self._pending_lf and pos < end:
            self._pending_lf = False
            if buf[pos] == _LF:
                if body_start == pos:
                    body_start += 1
                pos += 1
                line_start = pos

        events: list[SSEEvent | bytes] = []
        event_start = 0
        max_size = self.max_event_size
        screen = self.screen
        find = buf.find
        # Offset of the next LF at or after pos, or `end` if there is none.
        # Cached so that a stream of CR-terminated lines is not rescanned
        # to the end of the buffer for every line.
        next_lf = -1
        while True:
            if next_lf < pos:
                next_lf = find(b"\n", pos)
                if next_lf < 0:
                    next_lf = end
            cr = find(b"\r", pos, next_lf)
            if cr >= 0:
                line_end = cr
                if cr + 1 < end:
                    pos = cr + 2 if buf[cr + 1] == _LF else cr + 1
                else:
                    pos = end
                    self._pending_lf = True
            elif next_lf < end:
                line_end = next_lf
                pos = next_lf + 1
            else:
                pos = end
                break
            if line_end == line_start:  # a blank line ends the event
                if pos - event_start > max_size:
                    self._fail()
                if screen is not None:
                    with memoryview(buf) as view:
                        raw = bytes(view[event_start:pos])
                    screened = screen(raw)
                    events.append(screened if screened is not None
                                  else _build_event(buf, event_start, body_start, pos, complete=True))
                else:
                    events.append(_build_event(buf, event_start, body_start, pos, complete=True))
                event_start = body_start = pos
            line_start = pos

        if end - event_start > max_size:
            self._fail()
        if event_start:
            del buf[:event_start]
        self._body_start = body_start - event_start
        self._line_start = line_start - event_start
        self._scan_pos = pos - event_start
        return events

    def flush(self) -> list[SSEEvent]:
        """End of stream: return what is left as a final, unterminated event.

        Its ``raw`` is the remaining bytes; a trailing line without a line
        ending is parsed as a field line. The parser is then ready for a new
        stream.
        """
        if self._failed:
            raise SSEError("SSE parser already failed")
        buf = self._buf
        events = []
        if buf:
            events.append(_build_event(buf, 0, self._body_start, len(buf), complete=False))
        self._reset()
        return events

    def _fail(self) -> None:
        self._failed = True
        self._buf = bytearray()
        raise SSEError(f"SSE event larger than {self.max_event_size} bytes")


def _build_event(
    buf: bytearray, start: int, body_start: int, end: int, *, complete: bool
) -> SSEEvent:
    with memoryview(buf) as view:
        raw = bytes(view[start:end])
    body = raw if body_start == start else raw[body_start - start :]
    lines = _split_lines(body.decode("utf-8", "replace"))
    if complete:
        # Drop the blank line and the empty string after its line ending.
        del lines[-2:]
    elif lines[-1] == "":
        del lines[-1]

    data_lines: list[str] | None = None
    event = SSEEvent(raw=raw)
    for line in lines:
        if line.startswith(":"):
            event.comments.append(line[1:])
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            if data_lines is None:
                data_lines = [value]
            else:
                data_lines.append(value)
        elif name == "event":
            event.event = value
        elif name == "id":
            if "\0" not in value:
                event.id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                try:
                    event.retry = int(value)
                except ValueError:  # beyond int()'s digit limit: ignore, like any bad retry
                    pass
    if data_lines is not None:
        event.data = "\n".join(data_lines)
    return event
