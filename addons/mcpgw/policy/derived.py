"""Values derived from a policy (indexes, compiled settings), built once per policy version and
shared by every flow running on that version."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Generic, TypeVar

if TYPE_CHECKING:
    from .models import Policy

T = TypeVar("T")


class PerPolicy(Generic[T]):
    """`build(policy)`, computed once per policy object.

    Entries are keyed by the policy's identity, not its equality: each load is a new version even
    when the file did not change. The few most recent versions are kept, because flows that began
    before a reload finish on the version they began with."""

    def __init__(self, build: Callable[["Policy"], T], keep: int = 4):
        self._build = build
        self._keep = keep
        self._entries: OrderedDict[int, tuple["Policy", T]] = OrderedDict()
        self._latest: tuple["Policy", T] | None = None  # the entry asked for last: most calls ask for it again

    def __call__(self, policy: "Policy") -> T:
        latest = self._latest
        if latest is not None and latest[0] is policy:
            return latest[1]
        key = id(policy)
        entry = self._entries.get(key)
        if entry is not None and entry[0] is policy:  # the stored reference keeps the id from being reused
            self._entries.move_to_end(key)
            self._latest = entry
            return entry[1]
        value = self._build(policy)
        self._entries[key] = self._latest = (policy, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._keep:
            self._entries.popitem(last=False)
        return value
