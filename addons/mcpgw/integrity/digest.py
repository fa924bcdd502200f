"""Canonical JSON and SHA-256 pins of tool definitions.

A pin covers what the model reads and what the client validates against: name, title,
description, inputSchema, outputSchema and annotations. Other members (`_meta`, `icons`,
`execution`) are left out: servers vary them without changing what the tool is, and a pin that
changes every time would be ignored. Canonical JSON: keys sorted, no insignificant whitespace,
UTF-8 unescaped; so the same definition gives the same digest whatever the key order or spacing
the upstream uses."""

from __future__ import annotations

import hashlib
import json
from typing import Any

PINNED_FIELDS: tuple[str, ...] = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical(value: Any) -> str:
    return _ENCODER.encode(value)


def pinned_part(tool: dict[str, Any]) -> dict[str, Any]:
    """The members of a tool definition a pin covers (absent ones stay absent)."""
    return {k: tool[k] for k in PINNED_FIELDS if k in tool}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def tool_digest(tool: dict[str, Any]) -> str:
    return sha256(canonical(pinned_part(tool)))


def field_digests(tool: dict[str, Any]) -> dict[str, str]:
    """One digest per pinned member: what the audit record compares to name the changed fields.
    Computed only when a tool's digest differs from its pin (or when a pin is written)."""
    return {k: sha256(canonical(tool[k])) for k in PINNED_FIELDS if k in tool}


def changed_fields(old: dict[str, str], new: dict[str, str]) -> list[str]:
    return [k for k in PINNED_FIELDS if old.get(k) != new.get(k)]
