"""Judging tool definitions against their pins, and remembering what was withheld.

A list answer is judged tool by tool (`judge`); the digest the gateway last saw for each tool is
remembered per route (`observed`), so that a call to a tool whose listed definition differs from
its pin is refused even though the call itself carries no definition. In lock mode a tool
without a pin is refused whether it was listed or not; in trust-on-first-use mode a tool seen for
the first time is pinned, and a call to a tool never listed goes through (it is pinned when it
is first listed)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..governance.ledger import BoundedMap
from ..state.pins import FilePinStore, MemoryPinStore, PinStore
from ..state.pins_redis import RedisPinStore
from .digest import changed_fields, field_digests, tool_digest
from .kinds import TOOLS, Kind
from .lockfile import LockFilePins, pin_of
from .settings import IntegritySettings

if TYPE_CHECKING:
    from ..policy.store import Snapshot

log = logging.getLogger("mcpgw.integrity")

Status = Literal["ok", "pinned", "changed", "unpinned", "blocked"]


@dataclass(frozen=True, slots=True)
class Judgement:
    name: str
    status: Status
    digest: str
    pinned: str | None = None  # the approved digest, if any
    fields: tuple[str, ...] = ()  # members that differ from the pin
    rules: tuple[str, ...] = ()  # blocked: the scan rules that withheld it
    kind: Kind = TOOLS  # `name` is its pin store key (a tool's name, `prompt:NAME`, ...)

    @property
    def bare(self) -> str:
        """The name (or URI) as the upstream lists it."""
        return self.name[len(self.kind.prefix):]

    @property
    def withheld(self) -> bool:
        return self.status in ("changed", "unpinned")

    def record(self, action: str) -> dict[str, Any]:
        """The audit finding."""
        return {"check": "integrity.pin", self.kind.record_key: self.bare, "status": self.status, "action": action,
                "pinned_digest": self.pinned, "digest": self.digest, "changed_fields": list(self.fields)}

    def reason(self) -> str:
        if self.status == "blocked":
            return f"its definition looks poisoned ({', '.join(self.rules)})"
        if self.status == "unpinned":
            return "it has not been approved (no pin in the lock file)"
        return f"it changed since it was approved ({', '.join(self.fields) or 'definition'} changed)"


# (route, tool) -> the digest and judgement of the definition last listed
observed: BoundedMap[tuple[str, str], Judgement] = BoundedMap(100_000)
_stores: dict[tuple[str, str], PinStore] = {}  # (kind, resolved path or route) -> store, for the process
_warned: BoundedMap[tuple[str, str, str], bool] = BoundedMap(10_000)


def _beside_policy(source: str, name: str) -> Path:
    return (Path(source).parent / name).resolve()


def lock_path(source: str, settings: IntegritySettings | None) -> Path:
    """The lock file of a policy file: `lock_file`, or <policy name>.pins.json beside it."""
    return _beside_policy(source, (settings.lock_file if settings else None) or Path(source).stem + ".pins.json")


def store_for(snapshot: "Snapshot", route: str, settings: IntegritySettings) -> PinStore:
    """The pin store of a route; one per file (or Redis server) for the process, so a policy
    reload keeps pins (and a trust-on-first-use memory store keeps them until restart). Trust on
    first use keeps pins in `pin_store` if set, else in Redis when the policy's shared state is
    (`gateway.state.backend: redis`), else in memory."""
    state = snapshot.policy.gateway.state
    redis = state.redis if state.backend == "redis" else None
    if settings.pins == "lock":
        key: tuple = ("lock", str(lock_path(snapshot.source, settings)))
    elif settings.pin_store:
        key = ("file", str(_beside_policy(snapshot.source, settings.pin_store)))
    elif redis is not None:  # shared state: pins shared with the other gateway processes
        key = ("redis", redis.host, redis.port, redis.database, redis.key_prefix)
    else:
        key = ("memory", "")
    store = _stores.get(key)
    if store is None or (redis is not None and key[0] == "redis" and store.settings != redis):
        store = (LockFilePins(key[1]) if key[0] == "lock" else FilePinStore(key[1]) if key[0] == "file"
                 else RedisPinStore(redis) if key[0] == "redis" else MemoryPinStore())
        _stores[key] = store
    return store


def judge(store: PinStore, route: str, tool: dict[str, Any], settings: IntegritySettings,
          digest: str | None = None, kind: Kind = TOOLS) -> Judgement:
    """A list entry (a tool, or a prompt, resource or template: `kind`) against its pin."""
    name = kind.key(tool)
    assert name is not None
    digest = digest or tool_digest(tool, kind.fields)
    pin = store.get(route, name)
    if pin is None and settings.pins == "tofu":
        store.put(route, name, {k: v for k, v in pin_of(tool, kind).items() if k != "definition"})
        pin = store.get(route, name)  # another flow may have pinned it first: its pin counts
        if pin is not None and pin.get("digest") == digest:
            found = Judgement(name, "pinned", digest, digest, kind=kind)
            observed.put((route, name), found)
            return found
    if pin is None:
        found = Judgement(name, "unpinned", digest, kind=kind)
    elif pin.get("digest") == digest:
        found = Judgement(name, "ok", digest, digest, kind=kind)
    else:
        found = Judgement(name, "changed", digest, pin.get("digest"),
                          tuple(changed_fields(pin.get("fields") or {}, field_digests(tool, kind.fields), kind.fields)),
                          kind=kind)
    observed.put((route, name), found)
    if found.withheld and _warned.get((route, name, digest)) is None:
        _warned.put((route, name, digest), True)
        log.warning("route %s: tool %r %s (pinned %s, now %s)", route, name, found.status,
                    (found.pinned or "none")[:16], digest[:16])
    return found


def judge_call(store: PinStore, route: str, name: str, settings: IntegritySettings) -> Judgement | None:
    """Why a call to `name` must be refused, or None. Judged against the pin as it is now, so a
    tool approved since it was withheld (the lock file updated) is callable again."""
    pin = store.get(route, name)
    seen = observed.get((route, name))
    if pin is None:
        if settings.pins == "lock":
            return Judgement(name, "unpinned", seen.digest if seen else "")
        return None  # trust on first use: pinned when it is first listed
    if seen is not None and seen.digest != pin.get("digest"):
        return Judgement(name, "changed", seen.digest, pin.get("digest"), seen.fields)
    return None


def judge_use(store: PinStore, route: str, key: str, settings: IntegritySettings) -> Judgement | None:
    """A prompt or resource (`key` as in the pin store): refused while the definition listed last
    differs from its pin (or, in lock mode, has none). One never listed is not judged: a resource
    read through a template, or a prompt the client knew otherwise, has no definition to hold to."""
    seen = observed.get((route, key))
    if seen is None:
        return None
    pin = store.get(route, key)
    if pin is None:
        return Judgement(key, "unpinned", seen.digest, kind=seen.kind) if settings.pins == "lock" else None
    if seen.digest != pin.get("digest"):
        return Judgement(key, "changed", seen.digest, pin.get("digest"), seen.fields, kind=seen.kind)
    return None
