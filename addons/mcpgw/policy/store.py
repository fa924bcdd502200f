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
from .deck import DeckSettings
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
        self._resolved_at = 0.0  # time.monotonic() of the last load attempt: secrets were resolved then
        self.listeners: list[Callable[[Snapshot | None, PolicyError | None], None]] = []
        self.deck = DeckSettings()  # how a decK file is translated (gateway options); set before a load

    def load(self, path: str | Path, *, keep_unchanged: bool = False) -> Snapshot:
        """Load `path` now and make it current. Raises PolicyError (the current policy stays).
        With keep_unchanged, a result with the current digest leaves the current version in place."""
        path = Path(path).resolve()
        watched = self._watched if self.path == path else (path,)
        # Taken before reading: a file rewritten while it is read (a secret being rotated in
        # place) then differs from it at the next poll and is read again.
        before = _files_fingerprint(watched)
        self._resolved_at = time.monotonic()
        try:
            policy, digest, files = load_policy_file(path, deck=self.deck)
            if tuple(files) != watched:
                # Files read for the first time are not covered by `before`: read once more with
                # them known (only when the set of referenced files changes).
                watched, before = tuple(files), _files_fingerprint(files)
                policy, digest, files = load_policy_file(path, deck=self.deck)
        except PolicyError as e:
            self._watched, self.path, self._seen = watched, path, before
            self.last_error = e
            self.reloads_failed += 1
            self._notify(None, e)
            raise
        seen = before if tuple(files) == watched else _files_fingerprint(files)
        if keep_unchanged and self.current is not None and self.path == path and self.current.digest == digest:
            self._watched, self._seen = tuple(files), seen
            return self.current
        self._version += 1
        snap = Snapshot(policy, RouteTable(policy), digest, self._version, str(path), tuple(files))
        self.path, self._watched, self._seen = path, snap.files, seen
        self.current, self.last_error = snap, None  # the swap: one reference assignment
        self.reloads_ok += 1
        self._notify(snap, None)
        return snap

    def reload(self, force: bool = False, *, keep_unchanged: bool = False) -> str:
        """Reload if any watched file changed (or always, with force). Returns a one-line outcome.
        keep_unchanged: see load()."""
        if self.path is None:
            return "no policy configured"
        if not force and _files_fingerprint(self._watched) == self._seen:
            return "unchanged"
        previous = self.current
        try:
            snap = self.load(self.path, keep_unchanged=keep_unchanged)
        except PolicyError as e:
            keep = f"; keeping version {previous.version} ({previous.digest[:12]})" if previous else ""
            log.error("policy reload rejected%s: %s", keep, e)
            return f"rejected: {e}"
        if previous and snap.digest == previous.digest:
            return f"unchanged (version {snap.version})"
        log.info("policy version %d loaded from %s (%s)", snap.version, snap.source, snap.digest[:12])
        return f"loaded version {snap.version} ({snap.digest[:12]})"

    async def watch(self, interval: float) -> None:
        """Poll the policy and the files it references; reload off the event loop. With
        gateway.secret_refresh, also re-resolve every secret reference that often: secrets
        without a file (other backends) change too, and an unchanged digest swaps nothing."""
        while True:
            await asyncio.sleep(interval)
            try:
                refresh = self.current.policy.gateway.secret_refresh if self.current is not None else None
                if refresh is not None and time.monotonic() - self._resolved_at >= refresh:
                    await asyncio.to_thread(self.reload, True, keep_unchanged=True)
                else:
                    await asyncio.to_thread(self.reload)
            except Exception:  # the watcher must survive anything; the last good policy stays
                log.exception("policy watcher error; the active policy is unchanged")

    def _notify(self, snap: Snapshot | None, err: PolicyError | None) -> None:
        for fn in self.listeners:
            try:
                fn(snap, err)
            except Exception:  # the swap already happened; a listener (metrics, log masking) must not undo it
                log.exception("policy listener failed")
