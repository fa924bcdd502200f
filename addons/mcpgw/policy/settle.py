"""When a changed policy file is ready to be read: once it has stayed the same (size, modification
time and content) over a settle interval.

An editor, `cp` or a deployment tool writing in place writes a file in pieces, and a prefix of a
policy can be a valid policy that lacks what came later: a route cut off before its `acl:` lets
everyone call every tool. The store therefore loads a changed file only when two looks at it, at
least `interval` seconds apart, found it the same, and rejects a read during which the files
changed. Writing the file aside and renaming it over the old one (atomic replace) makes the file
change once, whole; the interval then only delays the reload."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

ATTEMPTS = 5  # an explicit load waits for a file still being written this many times, then gives up


class Changed(Exception):
    """The files changed since they were last seen settled, or while they were being read."""


@dataclass(frozen=True, slots=True)
class FilesState:
    digest: str  # content and names of every file (a change of content reloads; a touch does not)
    stats: tuple[tuple[int, int] | None, ...]  # (size, mtime_ns) per file; None: missing
    newest: float  # the latest modification time, in time.time() seconds


def files_state(files: tuple[Path, ...] | list[Path]) -> FilesState:
    h, stats, newest = hashlib.sha256(), [], 0.0
    for f in files:
        try:
            st = f.stat()
            data = f.read_bytes()
        except OSError:
            h.update(b"\0missing\0")
            stats.append(None)
        else:
            h.update(data)
            stats.append((st.st_size, st.st_mtime_ns))
            newest = max(newest, st.st_mtime)
        h.update(b"\0" + str(f).encode() + b"\0")
    return FilesState(h.hexdigest(), tuple(stats), newest)


class Settle:
    """Follows a change until it has settled. `interval` 0 loads a change as soon as it is seen."""

    def __init__(self, interval: float = 0.0) -> None:
        self.interval = interval
        self._pending: tuple[FilesState, float] | None = None  # the state last seen, and since when

    def settled(self, state: FilesState) -> bool:
        """The watcher's check, which never waits: whether `state` was already seen `interval`
        seconds ago (the first look at a new state starts the clock)."""
        now = time.monotonic()
        if self.interval <= 0:
            return True
        if self._pending is None or self._pending[0] != state:
            self._pending = (state, now)
            return False
        return now - self._pending[1] >= self.interval

    def forget(self) -> None:
        self._pending = None

    def next_check(self, poll: float) -> float:
        """Seconds until the watcher should look again: sooner than `poll` when a change settles."""
        if self._pending is None:
            return poll
        remaining = self.interval - (time.monotonic() - self._pending[1])
        return min(poll, max(remaining, 0.02))

    def wait(self, files: tuple[Path, ...]) -> FilesState:
        """For an explicit load (start-up, a new mcp_policy), which reads the file now: block until
        no file has been modified for `interval` seconds, confirmed by a second look."""
        state = files_state(files)
        for _ in range(ATTEMPTS):
            age = time.time() - state.newest
            if self.interval <= 0 or age >= self.interval:
                return state
            time.sleep(min(self.interval - age, self.interval))  # a future mtime waits one interval
            again = files_state(files)
            if again == state:
                return state
            state = again
        raise Changed
