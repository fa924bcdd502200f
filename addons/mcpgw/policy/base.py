"""Shared pydantic base and small value types used by every policy model."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import SplitResult, urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict

_SIZE = re.compile(r"^\s*(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*$", re.I)
_UNITS = {None: 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1024**3, "gb": 1000**3, "gib": 1024**3}


class StrictModel(BaseModel):
    """Every policy object refuses unknown fields: a typo in a security policy must not be ignored.

    Validators are built when a model is first used rather than at import (defer_build): building
    one for each of the 64 settings models at import cost about 0.3 s of every start, most of it
    for models a policy never uses."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, defer_build=True)


def _parse_size(value: object) -> object:
    if isinstance(value, str):
        m = _SIZE.match(value)
        if not m:
            raise ValueError(f"expected a size such as 1048576, '512KiB' or '1MiB', got {value!r}")
        return int(m.group(1)) * _UNITS[(m.group(2) or "").lower() or None]
    return value


ByteSize = Annotated[int, BeforeValidator(_parse_size)]


def http_url(value: str, what: str = "the URL") -> SplitResult:
    """The parts of an absolute http(s) URL with a host; anything else is refused naming `what`."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute http(s) URL, got {value!r}")
    return parts
