"""What governance remembers between flows, in bounded maps (oldest entries go first). Every key
holds the caller (sessions.caller), so one caller's entries never decide another's answers, and
nothing here decides whether a list answer is filtered: every list answer is (filtering.py).

- `expected`: task-augmented `tools/call`s whose answer may arrive on another flow (the legacy
  GET stream, a stream resumed with Last-Event-ID), by route, caller, session and JSON-RPC id;
  recorded only once the upstream has accepted the POST (2xx), never on the client's word;
- `tasks`: tasks created by those calls, by route, caller and task id, so a follow-up
  (`tasks/result`, ...) is decided like the call that created the task;
- `stand_ins`: denied calls replaced by a `ping` under a one-time id (legacy HTTP+SSE transport,
  where answers travel on the GET stream), so the ping's answer becomes the denial. The id is the
  gateway's own secret, so only the upstream answering that ping can produce it; an entry whose
  POST the upstream refused is dropped.

Everything is per gateway process: after a restart, follow-ups of older tasks are refused."""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

STAND_IN_PREFIX = "mcpgw-denied-"


class BoundedMap(Generic[K, V]):
    """A dict that forgets its least recently used entries beyond `capacity`."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def pop(self, key: K) -> V | None:
        return self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def id_key(message_id: Any) -> tuple[type, Any] | None:
    """A JSON-RPC id as a dict key: 1, "1" and True stay distinct. None for an unusable id."""
    if type(message_id) in (str, int):
        return type(message_id), message_id
    return None


@dataclass(frozen=True, slots=True)
class Expected:
    """A request whose answer the gateway handles: a task-augmented call, whose answer names a task."""

    method: str
    tool: str | None = None  # task-augmented tools/call: the tool it called
    allowed: bool = True  # that call's verdict (False only when shadow mode forwarded it)

    def merged(self, other: "Expected") -> "Expected":
        """Two requests of one body under the same id: the answer could be either's, so a task it
        creates counts as denied unless both were the same allowed call."""
        return self if self == other else Expected(self.method, self.tool, False)


@dataclass(frozen=True, slots=True)
class TaskOrigin:
    tool: str
    allowed: bool


@dataclass(frozen=True, slots=True)
class StandIn:
    route: str
    caller: str
    message_id: Any
    error: dict[str, Any]


expected: BoundedMap[tuple[str, str, str, tuple[type, Any]], Expected] = BoundedMap(50_000)
tasks: BoundedMap[tuple[str, str, str], TaskOrigin] = BoundedMap(100_000)
stand_ins: BoundedMap[str, StandIn] = BoundedMap(10_000)


def new_stand_in(route: str, caller: str, message_id: Any, error: dict[str, Any]) -> str:
    """Register a denial to deliver when the upstream answers the returned id."""
    token = STAND_IN_PREFIX + secrets.token_urlsafe(18)
    stand_ins.put(token, StandIn(route, caller, message_id, error))
    return token


def take_stand_in(route: str, caller: str, message_id: Any) -> StandIn | None:
    if type(message_id) is not str or not message_id.startswith(STAND_IN_PREFIX):
        return None
    found = stand_ins.get(message_id)
    if found is None or found.route != route or found.caller != caller:
        return None
    stand_ins.pop(message_id)
    return found
