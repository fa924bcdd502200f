"""The live policy: load, watch, validate, swap atomically, keep the last good version.

A flow takes `store.current` once when it starts and keeps that snapshot to the end, so a reload
between two hooks of the same flow never mixes versions."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..routing import RouteTable
from .loader import PolicyError, load_policy_file
from .models import Policy

log = logging.getLogger("mcpgw.policy")


@dataclass(frozen=True, slots=True)
class Snapshot:
    policy: Policy
    routes: RouteTable
    digest: str
    version: int
    source: str
    files: tuple[Path, ...]
    loaded_at: float = field(default_factory=time.time)


def _files_fingerprint(files: tuple[Path, ...] | list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        try:
            h.update(f.read_bytes())
        except OSError:
            h.update(b"\0missing\0")
        h.update(b"\0" + str(f).encode() + b"\0")
    return h.hexdigest()


class PolicyStore:
    def __init__(self) -> None:
        self.current: Snapshot | None = None
        self.path: Path | None = None
        self.last_error: PolicyError | None = None
        self.reloads_ok = 0
        self.reloads_failed = 0
        self._version = 0
        self._seen: str | None = None  # fingerprint of the files at the last attempt, good or bad
        self._watched: tuple[Path, ...] = ()
        self.listeners: list[Callable[[Snapshot | None, PolicyError | None], None]] = []

    def load(self, path: str | Path) -> Snapshot:
        """Load `path` now and make it current. Raises PolicyError (the current policy stays)."""
        path = Path(path).resolve()
        try:
            policy, digest, files = load_policy_file(path)
        except PolicyError as e:
            self._watched = self._watched if self.path == path else (path,)
            self.path = path
            self._seen = _files_fingerprint(self._watched)
            self.last_error = e
            self.reloads_failed += 1
            self._notify(None, e)
            raise
        self._version += 1
        snap = Snapshot(policy, RouteTable(policy), digest, self._version, str(path), tuple(files))
        self.path, self._watched = path, snap.files
        self._seen = _files_fingerprint(snap.files)
        self.current, self.last_error = snap, None  # the swap: one reference assignment
        self.reloads_ok += 1
        self._notify(snap, None)
        return snap

    def reload(self, force: bool = False) -> str:
        """Reload if any watched file changed (or always, with force). Returns a one-line outcome."""
        if self.path is None:
            return "no policy configured"
        if not force and _files_fingerprint(self._watched) == self._seen:
            return "unchanged"
        previous = self.current
        try:
            snap = self.load(self.path)
        except PolicyError as e:
            keep = f"; keeping version {previous.version} ({previous.digest[:12]})" if previous else ""
            log.error("policy reload rejected%s: %s", keep, e)
            return f"rejected: {e}"
        if previous and snap.digest == previous.digest:
            return f"unchanged (version {snap.version})"
        log.info("policy version %d loaded from %s (%s)", snap.version, snap.source, snap.digest[:12])
        return f"loaded version {snap.version} ({snap.digest[:12]})"

    async def watch(self, interval: float) -> None:
        """Poll the policy and the files it references; reload off the event loop."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.reload)
            except Exception:  # the watcher must survive anything; the last good policy stays
                log.exception("policy watcher error; the active policy is unchanged")

    def _notify(self, snap: Snapshot | None, err: PolicyError | None) -> None:
        for fn in self.listeners:
            try:
                fn(snap, err)
            except Exception:
                log.exception("policy listener failed")
