"""Kong decK files as policies (detected by `_format_version`)."""

from __future__ import annotations

from typing import Any


def translate_deck(data: dict[str, Any], source: str) -> dict[str, Any]:
    from .loader import PolicyError

    raise PolicyError(source, ["_format_version: Kong decK files are not supported by this version yet; write a native policy (docs/policy.md)"])
