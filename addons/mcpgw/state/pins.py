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
    """One process's pins; gone at restart."""

    def __init__(self, pins: dict[str, dict[str, Pin]] | None = None):
        self._pins: dict[str, dict[str, Pin]] = pins or {}
        self._lock = threading.Lock()
        self._version = 0

    def get(self, route: str, name: str) -> Pin | None:
        return self._pins.get(route, {}).get(name)

    def put(self, route: str, name: str, pin: Pin) -> None:
        with self._lock:
            tools = self._pins.setdefault(route, {})
            if name not in tools:
                tools[name] = pin
                self._version += 1

    def route(self, route: str) -> dict[str, Pin]:
        return dict(self._pins.get(route, {}))

    def flush(self) -> None:
        return None

    @property
    def version(self) -> int:
        return self._version


class FilePinStore(MemoryPinStore):
    """Pins kept in a JSON file ({"routes": {route: {tool: pin}}}), rewritten atomically (a
    temporary file renamed into place) once per list answer that added pins, so they survive a
    restart (a first list of 1,000 tools is one write, not a thousand). An
    unreadable file is an error at start, not an empty store: starting over with no pins would
    trust whatever the upstream sends next."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        pins: dict[str, dict[str, Pin]] = {}
        if self.path.exists():
            data = json.loads(self.path.read_text("utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("routes", {}), dict):
                raise ValueError(f"{self.path}: not a pin store (expected {{\"routes\": {{...}}}})")
            pins = data.get("routes", {})
        super().__init__(pins)
        self._dirty = False

    def put(self, route: str, name: str, pin: Pin) -> None:
        with self._lock:
            tools = self._pins.setdefault(route, {})
            if name not in tools:
                tools[name] = pin
                self._dirty = True
                self._version += 1

    def flush(self) -> None:
        with self._lock:
            if self._dirty:
                self._write()
                self._dirty = False

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".pins-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"routes": self._pins}, f, indent=1, sort_keys=True, ensure_ascii=False)
            os.replace(tmp, self.path)
        except BaseException:  # cleanup only: re-raised, the old pin file stays in place
            Path(tmp).unlink(missing_ok=True)
            raise
