"""Which of Kong's identity headers a route sends upstream (`upstream_identity_headers`; set in
upstream_headers.py)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator


# Every header the gateway can set (`upstream_identity_headers: [names]` picks some of them).
IDENTITY_HEADERS = ("X-Consumer-ID", "X-Consumer-Custom-ID", "X-Consumer-Username", "X-Credential-Identifier",
                    "X-Anonymous-Consumer", "X-Consumer-Groups")
_CANONICAL = {name.lower(): name for name in IDENTITY_HEADERS}


def _header_names(value: object) -> object:
    if not isinstance(value, (list, tuple)):
        return value
    unknown = [v for v in value if not isinstance(v, str) or v.lower() not in _CANONICAL]
    if unknown:
        raise ValueError(f"unknown identity header {unknown[0]!r} (known: {', '.join(IDENTITY_HEADERS)})")
    return tuple(dict.fromkeys(_CANONICAL[v.lower()] for v in value))


IdentityHeaderSetting = Annotated[bool | tuple[str, ...], BeforeValidator(_header_names)]
"""`upstream_identity_headers`: true (every header), false, or the names of the headers to send."""
