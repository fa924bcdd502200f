"""Tool pins (integrity/): the approved digest of each tool definition, by route and tool name.

`PinStore` is the whole interface. It is synchronous: pins are read on every list answer and
every tool call, from the message layer's synchronous transforms, so a store answers from memory;
a shared store (Redis) keeps a local copy and writes through, and may go stale only towards
"changed" (a pin written elsewhere makes a tool look changed here until it is read again), never
towards letting a changed tool through.

A pin is a small dict: {"digest": sha256, "fields": {member: sha256}} (integrity/digest.py), and
in a lock file also the definition it was computed from, for review."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("mcpgw.state.pins")

Pin = dict[str, Any]


class PinStore(Protocol):
    def get(self, route: str, name: str) -> Pin | None:
        """The pin of tool `name` on `route`, or None if it has none."""

    def put(self, route: str, name: str, pin: Pin) -> None:
        """Pin a tool (trust on first use): only if it has no pin yet; an existing pin is never
        replaced at run time, whatever the upstream sends."""

    def route(self, route: str) -> dict[str, Pin]:
        """Every pin of a route (a copy)."""

    def flush(self) -> None:
        """Make the pins put so far durable (called once per list answer, not once per pin)."""

    @property
    def version(self) -> int:
        """Changes whenever a pin is added or the pins are reloaded: verdicts kept about a list
        (integrity/approved.py) hold only for the version they were reached under."""


class MemoryPinStore:
    """One process's pins; gone at restart. The base of the stores that keep them elsewhere:
    `_pending` holds the pins learned since they were last made durable, which a reload of what
    is kept elsewhere must not lose."""

    def __init__(self, pins: dict[str, dict[str, Pin]] | None = None):
        self._pins: dict[str, dict[str, Pin]] = pins or {}
        self._lock = threading.Lock()
        self._version = 0
        self._pending: dict[str, dict[str, Pin]] | None = None  # None: nothing kept elsewhere

    def get(self, route: str, name: str) -> Pin | None:
        return self._pins.get(route, {}).get(name)

    def put(self, route: str, name: str, pin: Pin) -> None:
        with self._lock:
            tools = self._pins.setdefault(route, {})
            if name not in tools:
                tools[name] = pin
                self._version += 1
                if self._pending is not None:
                    self._pending.setdefault(route, {})[name] = pin

    def route(self, route: str) -> dict[str, Pin]:
        return dict(self._pins.get(route, {}))

    def flush(self) -> None:
        return None

    @property
    def version(self) -> int:
        return self._version

    def _replace(self, pins: dict[str, dict[str, Pin]], routes: tuple[str, ...] | None = None) -> None:
        """Take the pins as kept elsewhere (of every route, or of those named), plus those
        learned here and not written there yet. Caller holds the lock."""
        pending = self._pending or {}
        targets = set(routes) if routes is not None else set(self._pins) | set(pins) | set(pending)
        changed = False
        for route in targets:
            tools = dict(pins.get(route, {}))
            for name, pin in pending.get(route, {}).items():
                tools.setdefault(name, pin)
            if tools != self._pins.get(route, {}):
                self._pins[route] = tools
                changed = True
        if changed:
            self._version += 1


RECHECK = 1.0  # seconds between checks of a pin file's modification time


class FilePinStore(MemoryPinStore):
    """Pins kept in a JSON file ({"routes": {route: {tool: pin}}}), rewritten atomically (a
    temporary file renamed into place) once per list answer that added pins, so they survive a
    restart (a first list of 1,000 tools is one write, not a thousand).

    An unreadable file is an error at start, not an empty store: starting over with no pins would
    trust whatever the upstream sends next. The file may be edited while the gateway runs (remove
    a tool's pin to accept its change): an edit is read within a second, and the pins learned
    since the gateway last wrote the file are kept and written back with the next list. While the
    file cannot be read (a half-saved edit) or is gone, the pins held stay in force and the file is
    not overwritten."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        super().__init__(self._read() if self.path.exists() else {})
        self._pending = {}
        self._stamp = self._stat()
        self._checked = time.monotonic()
        self._unreadable: tuple | None = None  # the stamp of a file that failed to parse

    def _read(self) -> dict[str, dict[str, Pin]]:
        data = json.loads(self.path.read_text("utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("routes", {}), dict) or \
                not all(isinstance(t, dict) for t in data.get("routes", {}).values()):
            raise ValueError(f"{self.path}: not a pin store (expected {{\"routes\": {{...}}}})")
        return data.get("routes", {})

    def _stat(self) -> tuple | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def refresh(self, force: bool = False) -> None:
        """Read the file again if it changed since this store last read or wrote it."""
        now = time.monotonic()
        if not force and now - self._checked < RECHECK:
            return
        self._checked = now
        stamp = self._stat()
        if stamp == self._stamp or stamp is None or stamp == self._unreadable:
            return  # unchanged, gone (pins held stay), or still the edit that could not be read
        with self._lock:
            try:
                pins = self._read()
            except (OSError, ValueError) as e:
                self._unreadable = stamp
                log.error("%s: cannot read the edited pin file (%s); the pins held stay in force", self.path, e)
                return
            self._unreadable = None
            self._stamp = stamp
            self._replace(pins)

    def get(self, route: str, name: str) -> Pin | None:
        self.refresh()
        return super().get(route, name)

    @property
    def version(self) -> int:
        self.refresh()
        return self._version

    def flush(self) -> None:
        if not self._pending:
            return
        self.refresh(force=True)  # an edit made since the last look is merged, not overwritten
        with self._lock:
            if not self._pending or (self._unreadable is not None and self._unreadable == self._stat()):
                return  # never overwrite an edit that could not be read; the pins stay pending
            self._stamp = self._write()
            self._pending = {}

    def _write(self) -> tuple:
        """Write the file; its stamp (taken before the rename, so an edit right after is not mistaken for ours)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".pins-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"routes": self._pins}, f, indent=1, sort_keys=True, ensure_ascii=False)
            st = os.stat(tmp)
            os.replace(tmp, self.path)
            return st.st_mtime_ns, st.st_size, st.st_ino
        except BaseException:  # cleanup only: re-raised, the old pin file stays in place
            Path(tmp).unlink(missing_ok=True)
            raise
