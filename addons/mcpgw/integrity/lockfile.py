"""The lock file: approved tool definitions per route, beside the policy, meant to be reviewed in
git like a package lock.

    {"version": 1,
     "routes": {"github-mcp": {"tools": {"search_code": {"digest": "...", "fields": {...},
                                                          "definition": {...}}}}}}

`definition` is what the digest was computed from, so a reviewer (and `pin --update`) can see
what was approved; the gateway only reads `digest` and `fields`. `LockFilePins` is the
read-only pin store of lock mode: nothing is pinned at run time, and an edited file is picked up
without a restart (checked at most once a second)."""

from __future__ import annotations

import difflib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..state.pins import Pin
from .digest import PINNED_FIELDS, changed_fields, field_digests, pinned_part, tool_digest
from .kinds import ALL, TOOLS, Kind

VERSION = 1
RECHECK = 1.0  # seconds between checks of the lock file's modification time


def read(path: Path) -> dict[str, dict[str, Pin]]:
    """route -> tool -> pin; an absent file is an empty lock (every tool unpinned)."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text("utf-8"))
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("routes"), dict):
        raise ValueError(f"{path}: not a version {VERSION} tool lock file")
    routes: dict[str, dict[str, Pin]] = {}
    for route, entry in data["routes"].items():
        tools = entry.get("tools") if isinstance(entry, dict) else None
        if not isinstance(tools, dict):
            raise ValueError(f"{path}: route {route!r} has no \"tools\" object")
        flat: dict[str, Pin] = {}
        for kind in ALL:  # prompts and resources (integrity.pin_also) beside the tools, keyed as in a pin store
            section = entry.get(kind.list_key, {})
            if not isinstance(section, dict):
                raise ValueError(f"{path}: route {route!r}: \"{kind.list_key}\" is not an object")
            for name, pin in section.items():
                if not isinstance(pin, dict) or not isinstance(pin.get("digest"), str):
                    raise ValueError(f"{path}: route {route!r} {kind.record_key} {name!r} has no digest")
                flat[kind.prefix + name] = pin
        routes[route] = flat
    return routes


def _sections(flat: dict[str, Pin]) -> dict[str, dict[str, Pin]]:
    """A route's pins as the lock file writes them: one object per kind (tools always)."""
    out: dict[str, dict[str, Pin]] = {"tools": {}}
    for key, pin in flat.items():
        kind = next((k for k in ALL[1:] if key.startswith(k.prefix)), TOOLS)
        out.setdefault(kind.list_key, {})[key[len(kind.prefix):]] = pin
    return out


def pin_of(tool: dict[str, Any], kind: Kind = TOOLS) -> Pin:
    return {"digest": tool_digest(tool, kind.fields), "fields": field_digests(tool, kind.fields),
            "definition": pinned_part(tool, kind.fields)}


def _entries(tools: list[dict[str, Any]], others: dict[Kind, list] | None) -> dict[str, tuple[Kind, dict[str, Any]]]:
    """pin store key -> (kind, entry) of a fetched catalog."""
    out = {}
    for kind, entries in ((TOOLS, tools), *(others or {}).items()):
        for entry in entries:
            if (key := kind.key(entry)) is not None:
                out[key] = (kind, entry)
    return out


def write(path: Path, route: str, tools: list[dict[str, Any]], others: dict[Kind, list] | None = None) -> None:
    """Replace one route's pins (other routes kept), atomically. `others`: prompts, resources,
    resource templates (integrity.pin_also)."""
    data: dict[str, Any] = {"version": VERSION, "routes": read(path)}
    data["routes"] = {**{r: _sections(t) for r, t in data["routes"].items()},
                      route: _sections({key: pin_of(e, kind) for key, (kind, e) in _entries(tools, others).items()})}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".lock-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:  # cleanup only: re-raised, the old lock file stays in place
        Path(tmp).unlink(missing_ok=True)
        raise


def diff(old: dict[str, Pin], tools: list[dict[str, Any]], others: dict[Kind, list] | None = None) -> list[str]:
    """What `pin --update` would change, readably: added and removed entries, and for a changed
    one the fields that changed with a unified diff of each (prompts and resources are named by
    their pin store key, `prompt:NAME`, `resource:URI`)."""
    lines: list[str] = []
    new = _entries(tools, others)
    for name in sorted(set(old) - set(new)):
        lines.append(f"- removed: {name}")
    for name in sorted(set(new) - set(old)):
        lines.append(f"+ added: {name}")
    for name in sorted(set(new) & set(old)):
        kind, entry = new[name]
        if old[name].get("digest") == tool_digest(entry, kind.fields):
            continue
        fields = changed_fields(old[name].get("fields", {}), field_digests(entry, kind.fields), kind.fields)
        lines.append(f"~ changed: {name} ({', '.join(fields) or 'definition'})")
        before = old[name].get("definition", {})
        for field in fields:
            a = _text(before.get(field)) if field in before else []
            b = _text(entry.get(field)) if field in entry else []
            lines += ["    " + d.rstrip("\n") for d in difflib.unified_diff(a, b, f"{name}.{field} (pinned)",
                                                                          f"{name}.{field} (now)", lineterm="")]
    return lines


def _text(value: Any) -> list[str]:
    text = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return text.splitlines() or [""]


class LockFilePins:
    """Read-only pin store over a lock file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._routes: dict[str, dict[str, Pin]] = {}
        self._version = 0
        self._refresh(force=True)  # a broken lock file fails the policy load, not a request

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < RECHECK:
            return
        with self._lock:
            self._checked = now
            try:
                st = self.path.stat()
                stamp = (st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                stamp = None
            if stamp == self._stamp and not force:
                return
            # A file that cannot be read keeps the previous pins: tools stay held to them.
            self._routes = read(self.path) if stamp is not None else {}
            self._stamp = stamp
            self._version += 1

    def get(self, route: str, name: str) -> Pin | None:
        try:
            self._refresh()
        except (OSError, ValueError):
            pass  # keep the pins read last (logged by whoever next loads it at start)
        return self._routes.get(route, {}).get(name)

    def put(self, route: str, name: str, pin: Pin) -> None:
        return None  # lock mode: approvals come from the file only

    def flush(self) -> None:
        return None

    @property
    def version(self) -> int:
        try:
            self._refresh()
        except (OSError, ValueError):
            pass  # as in get: the pins read last stay in force
        return self._version

    def route(self, route: str) -> dict[str, Pin]:
        self._refresh()
        return dict(self._routes.get(route, {}))


__all__ = ["PINNED_FIELDS", "LockFilePins", "diff", "pin_of", "read", "write"]
