"""One pass over a message's raw bytes that tells which of many patterns occur in it.

The message layer asks each transform, before parsing, whether it would pass a message unchanged
(protocol/messages.py, `passes`). For integrity that question is "does any credential pattern,
gateway secret, `"tools"` key or stand-in id occur in these bytes?", for the ACL's list filter
"does any list member or stand-in id?" (governance/filtering.py): most answers hold none, and
parsing a 1 MB result to find that out costs more than relaying it. Asking it with Python's `re`
(an alternation of 25 literals) reads a megabyte at ~12 ns a byte; Hyperscan (Intel's SIMD
multi-pattern matcher, the `hyperscan` wheel, which bundles the library) answers for every
pattern at once at well under 1 ns a byte.

A pattern here is a *superset* test: `HS_FLAG_PREFILTER` lets Hyperscan approximate constructs it
cannot run exactly (look-arounds, lazy repeats) by matching more, never less, so "absent" is
certain and "present" is confirmed by the caller with Python's `re`. Without the wheel (another
platform), `Patterns` is unavailable and callers take their full path: slower, never laxer."""

from __future__ import annotations

import threading
from typing import Sequence

try:
    import hyperscan as _hs
except ImportError:  # another platform: every message takes the parsing path
    _hs = None

AVAILABLE = _hs is not None


class Patterns:
    """A compiled set of byte patterns; `present(data)` gives the indexes of those occurring.
    `streaming=True` compiles them for `open()` instead: one body screened chunk by chunk."""

    def __init__(self, patterns: Sequence[bytes], literal: Sequence[bool], dotall: Sequence[bool] = (),
                 streaming: bool = False):
        if _hs is None:
            raise RuntimeError("hyperscan is not installed")
        self.size = len(patterns)
        flags = []
        for i in range(len(patterns)):
            f = _hs.HS_FLAG_SINGLEMATCH  # one report per pattern is all a presence test needs
            if not literal[i]:
                f |= _hs.HS_FLAG_PREFILTER | (_hs.HS_FLAG_DOTALL if i < len(dotall) and dotall[i] else 0)
            flags.append(f)
        exprs = [_literal(p) if lit else p for p, lit in zip(patterns, literal)]
        self._db = _hs.Database(mode=_hs.HS_MODE_STREAM if streaming else _hs.HS_MODE_BLOCK)
        self._db.compile(expressions=exprs, ids=list(range(len(exprs))), elements=len(exprs), flags=flags)
        self._scratch = threading.local()  # a scratch space is one scan's: one per thread
        self.streaming = streaming

    def open(self) -> "Screening":
        """A screening of one body whose chunks come in turn (stream mode): a pattern is found
        across chunk boundaries, and no byte is read twice."""
        return Screening(self._db)

    def present(self, data: bytes) -> set[int]:
        found: set[int] = set()
        scratch = getattr(self._scratch, "s", None)
        if scratch is None:
            scratch = self._scratch.s = _hs.Scratch(self._db)
        self._db.scan(data, match_event_handler=_collect, context=found, scratch=scratch)
        return found


class Screening:
    """One body screened in stream mode: `feed(chunk)` after `feed(chunk)`; `found` holds the
    indexes of the patterns that occurred so far (a match is reported where it ends). `close()`
    frees the stream (also done when the screening is collected)."""

    __slots__ = ("found", "_stream")

    def __init__(self, db) -> None:
        self.found: set[int] = set()
        self._stream = db.stream(match_event_handler=_collect, context=self.found)
        self._stream.__enter__()

    def feed(self, chunk: bytes) -> set[int]:
        if self._stream is None:
            raise ValueError("screening closed")
        self._stream.scan(chunk)
        return self.found

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.__exit__(None, None, None)

    def __del__(self) -> None:
        self.close()


def _literal(pattern: bytes) -> bytes:
    """A byte string as a Hyperscan expression matching exactly it: every byte but letters and
    digits written as \\xHH (expressions are C strings: a NUL byte must be spelt, not included)."""
    return b"".join(bytes([c]) if chr(c).isalnum() and c < 128 else b"\\x%02x" % c for c in pattern)


def _collect(pattern: int, start: int, end: int, flags: int, found: set[int]) -> None:
    found.add(pattern)


def compiles(pattern: str) -> bool:
    """Whether Hyperscan accepts a (Python) regular expression in prefilter mode."""
    if _hs is None:
        return False
    try:
        Patterns([pattern.encode("utf-8")], [False])
    except _hs.error:
        return False
    return True
