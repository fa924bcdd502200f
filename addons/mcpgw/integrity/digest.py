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
from json.encoder import c_encode_basestring, c_make_encoder
from typing import Any

from ..governance.ledger import BoundedMap

from .kinds import TOOL_FIELDS

PINNED_FIELDS = TOOL_FIELDS

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical(value: Any) -> str:
    return _ENCODER.encode(value)


def pinned_part(tool: dict[str, Any], fields: tuple[str, ...] = PINNED_FIELDS) -> dict[str, Any]:
    """The members of a tool definition (or another kind's entry) a pin covers (absent ones stay absent)."""
    return {k: tool[k] for k in fields if k in tool}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _not_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


# The C encoder made once: JSONEncoder.encode builds one per call, which costs more than encoding
# a tool. Without sorting keys, as the upstream sent them: the cheap key of the digest cache.
_AS_SENT = (lambda v: "".join(_c(v, 0))) if (_c := c_make_encoder and c_make_encoder(
    None, _not_json, c_encode_basestring, None, ":", ",", False, False, False)) else \
    json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False).encode
_digests: BoundedMap[bytes, str] = BoundedMap(50_000)


def tool_digest(tool: dict[str, Any], fields: tuple[str, ...] = PINNED_FIELDS) -> str:
    """The pin digest, cached by the tool as sent: a catalog listed again costs one unsorted
    encoding per tool instead of a sorted one (sorting every object's keys is most of the cost).
    Equal encodings are equal definitions, so the cache never gives another tool's digest."""
    kind = b"" if fields is PINNED_FIELDS else ",".join(fields).encode() + b"\0"  # another kind: another digest
    key = hashlib.sha256(kind + _AS_SENT(tool).encode("utf-8", "surrogatepass")).digest()
    found = _digests.get(key)
    if found is None:
        found = sha256(canonical(pinned_part(tool, fields)))
        _digests.put(key, found)
    return found


def field_digests(tool: dict[str, Any], fields: tuple[str, ...] = PINNED_FIELDS) -> dict[str, str]:
    """One digest per pinned member: what the audit record compares to name the changed fields.
    Computed only when a tool's digest differs from its pin (or when a pin is written)."""
    return {k: sha256(canonical(tool[k])) for k in fields if k in tool}


def changed_fields(old: dict[str, str], new: dict[str, str], fields: tuple[str, ...] = PINNED_FIELDS) -> list[str]:
    return [k for k in fields if old.get(k) != new.get(k)]
