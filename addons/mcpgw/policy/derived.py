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

    def __call__(self, policy: "Policy") -> T:
        key = id(policy)
        entry = self._entries.get(key)
        if entry is not None and entry[0] is policy:  # the stored reference keeps the id from being reused
            self._entries.move_to_end(key)
            return entry[1]
        value = self._build(policy)
        self._entries[key] = (policy, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._keep:
            self._entries.popitem(last=False)
        return value
