"""The live policy: load, watch, validate, swap atomically, keep the last good version.

A flow takes `store.current` once when it starts and keeps that snapshot to the end, so a reload
between two hooks of the same flow never mixes versions. A changed file is loaded only once it has
settled (settle.py): never a half-written one."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..routing import RouteTable
from .deck import DeckSettings
from . import settle
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


class PolicyStore:
    def __init__(self) -> None:
        self.current: Snapshot | None = None
        self.path: Path | None = None
        self.last_error: PolicyError | None = None
        self.reloads_ok = 0
        self.reloads_failed = 0
        self._version = 0
        self._seen: str | None = None  # digest of the files at the last attempt, good or bad
        self.settle = settle.Settle()  # the gateway sets its interval (mcp_policy_settle)
        self._watched: tuple[Path, ...] = ()
        self._resolved_at = 0.0  # time.monotonic() of the last load attempt: secrets were resolved then
        self.listeners: list[Callable[[Snapshot | None, PolicyError | None], None]] = []
        self.deck = DeckSettings()  # how a decK file is translated (gateway options); set before a load

    def load(self, path: str | Path, *, keep_unchanged: bool = False) -> Snapshot:
        """Load `path` now and make it current. Raises PolicyError (the current policy stays).
        With keep_unchanged, a result with the current digest leaves the current version in place.
        Files modified within the settle interval are waited for (this blocks, up to a few intervals)."""
        path = Path(path).resolve()
        for _ in range(settle.ATTEMPTS):
            try:
                return self._load(path, keep_unchanged, None)
            except settle.Changed:
                continue
        e = PolicyError(str(path), ["the file kept changing while it was read; write it aside and rename it into place"])
        self._rejected(path, self._watched if self.path == path else (path,), None, e)
        raise e

    def _load(self, path: Path, keep_unchanged: bool, expected: settle.FilesState | None) -> Snapshot:
        """One attempt. `expected`: the settled state the watcher saw (None: wait here until settled).
        Raises settle.Changed if the files are not in that state, or change while being read."""
        watched = self._watched if self.path == path else (path,)
        before = self._steady(watched, expected)
        self._resolved_at = time.monotonic()
        try:
            policy, digest, files = load_policy_file(path, deck=self.deck)
            if tuple(files) != watched:
                # Files read for the first time are not covered by `before`: read once more with
                # them known (only when the set of referenced files changes).
                watched = tuple(files)
                if expected is not None:  # the watcher lets the new files settle first
                    self._watched = watched
                    raise settle.Changed
                before = self._steady(watched, None)
                policy, digest, files = load_policy_file(path, deck=self.deck)
        except PolicyError as e:
            self._rejected(path, watched, before.digest, e)
            raise
        if tuple(files) != watched or settle.files_state(watched) != before:
            raise settle.Changed  # written while it was read: what was read may be a mix
        seen = before.digest
        if keep_unchanged and self.current is not None and self.path == path and self.current.digest == digest:
            self._watched, self._seen = tuple(files), seen
            return self.current
        self._version += 1
        snap = Snapshot(policy, RouteTable(policy), digest, self._version, str(path), tuple(files))
        self.path, self._watched, self._seen = path, snap.files, seen
        self.current, self.last_error = snap, None  # the swap: one reference assignment
        self.reloads_ok += 1
        self.settle.forget()
        self._notify(snap, None)
        return snap

    def _steady(self, files: tuple[Path, ...], expected: settle.FilesState | None) -> settle.FilesState:
        if expected is None:
            return self.settle.wait(files)
        state = settle.files_state(files)
        if state != expected:
            raise settle.Changed
        return state

    def _rejected(self, path: Path, watched: tuple[Path, ...], seen: str | None, e: PolicyError) -> None:
        self._watched, self.path, self._seen = watched, path, seen
        self.last_error = e
        self.reloads_failed += 1
        self._notify(None, e)

    def reload(self, force: bool = False, *, keep_unchanged: bool = False) -> str:
        """Reload if any watched file changed (or always, with force). Returns a one-line outcome.
        A change is loaded once it has settled, force or not: force re-reads unchanged files
        (to re-resolve secrets), it never reads a file still being written. keep_unchanged: see load()."""
        if self.path is None:
            return "no policy configured"
        state = settle.files_state(self._watched)
        if state.digest == self._seen:
            self.settle.forget()
            if not force:
                return "unchanged"
        elif not self.settle.settled(state):
            return f"settling: a policy file changed less than {self.settle.interval:g}s ago; loading it once unchanged that long"
        previous = self.current
        try:
            snap = self._load(self.path, keep_unchanged, state)
        except settle.Changed:
            return "settling: a policy file is still changing"
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
            await asyncio.sleep(self.settle.next_check(interval))
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
