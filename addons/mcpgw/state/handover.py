"""Stores kept on the mitmproxy master: a script reload re-imports the gateway's package, and
what lives on the master (which survives it) is handed to the new code instead of starting empty."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def kept_on(master: object, attribute: str, make: Callable[[], T]) -> T:
    """The object stored on `master` under `attribute`, created with `make()` on first use."""
    found = getattr(master, attribute, None)
    if found is None:
        found = make()
        setattr(master, attribute, found)
    return found
