"""MCP's method names per protocol revision, the requests a revision removed, and the one
canonical spelling of a method (`canonical_method` refuses disguised known methods)."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

from .jsonrpc_model import INVALID_REQUEST, JsonRpcParseError, _quote


# Method names longer than this are refused outright: folding them for
# comparison costs time proportional to their length.
_MAX_METHOD_LENGTH = 1024

_BASE_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "resources/subscribe",
        "resources/unsubscribe",
        "logging/setLevel",
        "completion/complete",
        "sampling/createMessage",
        "roots/list",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/message",
        "notifications/resources/updated",
        "notifications/resources/list_changed",
        "notifications/tools/list_changed",
        "notifications/prompts/list_changed",
        "notifications/roots/list_changed",
    }
)
_REV_2025_06_18 = _BASE_METHODS | {"elicitation/create"}
_REV_2025_11_25 = _REV_2025_06_18 | {
    "notifications/elicitation/complete",
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
    "notifications/tasks/status",
}
# The stateless revision drops initialization, ping, logging and resource
# subscriptions in favour of discovery and a subscription stream.
_REV_2026_07_28 = (
    _REV_2025_06_18
    - {
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "resources/unsubscribe",
        "notifications/initialized",
        "notifications/roots/list_changed",
    }
) | {"server/discover", "subscriptions/listen", "notifications/subscriptions/acknowledged"}

METHODS_BY_REVISION: Mapping[str, frozenset[str]] = {
    "2024-11-05": _BASE_METHODS,
    "2025-03-26": _BASE_METHODS,
    "2025-06-18": frozenset(_REV_2025_06_18),
    "2025-11-25": frozenset(_REV_2025_11_25),
    "2026-07-28": frozenset(_REV_2026_07_28),
}
"""Methods (requests and notifications, both directions) per MCP revision,
taken from each revision's schema.ts."""

KNOWN_METHODS: frozenset[str] = frozenset().union(*METHODS_BY_REVISION.values())

REMOVED_REQUESTS_BY_REVISION: Mapping[str, frozenset[str]] = {
    # SEP-2575 (stateless) and SEP-2663 (tasks become an extension keeping tasks/get, tasks/cancel)
    "2026-07-28": frozenset({"initialize", "ping", "logging/setLevel", "resources/subscribe",
                             "resources/unsubscribe", "tasks/result", "tasks/list"}),
}
"""Requests a revision removed from the one before it. Over HTTP that revision answers them
404 with -32601 (Method not found), whatever their params."""


def removed_in(method: str | None, revision: str) -> bool:
    return method in REMOVED_REQUESTS_BY_REVISION.get(revision, ())


# --- method names ---------------------------------------------------------

# Slash look-alikes that NFKC leaves alone.
_SLASH_LOOKALIKES = str.maketrans(dict.fromkeys("\u2044\u2215\u29f8\u2571\u27cb", "/"))
_ASCII_CONTROLS = dict.fromkeys([*range(0x20), 0x7F])


def _fold_method(name: str) -> str:
    """Reduce a method name to what a careless server might compare."""
    folded = unicodedata.normalize("NFKC", name)
    folded = unicodedata.normalize("NFKC", folded.casefold()).translate(_SLASH_LOOKALIKES)
    if folded.isascii():
        return "".join(folded.split()).translate(_ASCII_CONTROLS)
    # Drop whitespace, controls and invisible format characters (zero-width
    # space and joiners, soft hyphen, BOM...).
    return "".join(
        ch for ch in folded if not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf")
    )


_FOLDED_KNOWN_METHODS = {_fold_method(method): method for method in KNOWN_METHODS}


def canonical_method(method: str) -> str | None:
    """Return ``method`` if it is exactly a known MCP method, ``None`` if it
    is unknown, and raise :class:`JsonRpcParseError` (``INVALID_REQUEST``) if
    it is a disguised known method: one that differs only by case,
    whitespace, invisible characters or Unicode compatibility forms
    (``"Tools/Call"``, ``"tools/call "``, ``"tools\\uff0fcall"``). Such a
    method must be refused, never forwarded: the gateway would not apply the
    method's policy while a lenient server might still run it. Names longer
    than 1024 characters are refused as well. Look-alikes that NFKC does not
    fold (Cyrillic or Greek letters) come back as unknown (``None``).
    """
    if method in KNOWN_METHODS:
        return method
    if len(method) > _MAX_METHOD_LENGTH:
        raise JsonRpcParseError(INVALID_REQUEST, "method name too long")
    canonical = _FOLDED_KNOWN_METHODS.get(_fold_method(method))
    if canonical is not None:
        raise JsonRpcParseError(INVALID_REQUEST, f"method name must be exactly {_quote(canonical)}")
    return None
