"""Parsing JSON-RPC bodies: strict for what clients send (`parse_strict`), lenient for what servers
send (`parse_lenient`); protocol/jsonrpc.py says why each is what it is."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .jsonrpc_model import INVALID_REQUEST, PARSE_ERROR, JsonRpcParseError, Message, _quote, dumps


MAX_DEPTH = 64
"""Deepest nesting of objects and arrays accepted from a client (the
top-level value counts as level 1)."""

# Integer ids beyond this are read differently by peers that hold JSON numbers
# as IEEE-754 doubles (JavaScript), which would break response matching.
_MAX_SAFE_INTEGER = 2**53 - 1


# --- strict parsing -------------------------------------------------------


class _Rejected(Exception):
    """Raised from the decoder hooks; carries a client-safe reason."""


def _unique_keys_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Rejected(f"duplicate key {_quote(key)} in JSON object")
            seen.add(key)
    return obj


def _reject_constant(name: str) -> Any:
    raise _Rejected(f"{name} is not allowed in JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # e.g. 1e400: would re-serialize as Infinity
        raise _Rejected("number out of range")
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

_STRICT_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys_object,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
)


def _nesting_exceeds(document: Any, limit: int) -> bool:
    """Whether ``document`` nests objects and arrays deeper than ``limit``
    levels (the document itself is level 1)."""
    # Breadth-first, one level of containers at a time: no recursion, and
    # each value is looked at once.
    if type(document) not in (dict, list):
        return False
    level = [document]
    for _ in range(limit):
        next_level = []
        append = next_level.append
        for container in level:
            for value in container.values() if type(container) is dict else container:
                value_type = type(value)
                if value_type is dict or value_type is list:
                    append(value)
        if not next_level:
            return False
        level = next_level
    return True


def _is_valid_id(value: Any) -> bool:
    # `type(...) is int` on purpose: bool is a subclass of int.
    if type(value) is str:
        return True
    return type(value) is int and -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER


def _is_error_object(value: Any) -> bool:
    return (
        type(value) is dict
        and type(value.get("code")) is int
        and type(value.get("message")) is str
    )


def _validate(obj: Any) -> Message:
    """Classify one client message, refusing any that is not well-formed
    JSON-RPC 2.0: the ``INVALID_REQUEST`` error carries the message's id
    whenever that id is itself valid."""
    if type(obj) is not dict:
        raise JsonRpcParseError(INVALID_REQUEST, "batch element is not a JSON object")
    msg_id = obj.get("id")
    if obj.get("jsonrpc") != "2.0":
        raise _invalid('"jsonrpc" must be "2.0"', msg_id)
    has_result = "result" in obj
    has_error = "error" in obj

    if "method" in obj:
        if type(obj["method"]) is not str:
            raise _invalid('"method" must be a string', msg_id)
        if has_result or has_error:
            raise _invalid('a request cannot carry "result" or "error"', msg_id)
        if "params" in obj and type(obj["params"]) not in (dict, list):
            raise _invalid('"params" must be an object or an array', msg_id)
        if "id" not in obj:
            return Message(obj, "notification")
        if not _is_valid_id(msg_id):
            raise _invalid('"id" must be a string or an integer', msg_id)
        return Message(obj, "request")

    if has_result == has_error:
        raise _invalid('a response needs exactly one of "result" and "error"', msg_id)
    if "id" not in obj:
        raise _invalid('a response needs an "id"', msg_id)
    if has_error:
        # null is the id of an error about a request whose id was unreadable.
        if msg_id is not None and not _is_valid_id(msg_id):
            raise _invalid('"id" must be a string, an integer or null', msg_id)
        if not _is_error_object(obj["error"]):
            raise _invalid('"error" must be an object with an integer "code" and a string "message"', msg_id)
        return Message(obj, "error")
    if not _is_valid_id(msg_id):
        raise _invalid('"id" must be a string or an integer', msg_id)
    return Message(obj, "response")


def _invalid(reason: str, msg_id: Any) -> JsonRpcParseError:
    return JsonRpcParseError(INVALID_REQUEST, reason, msg_id if _is_valid_id(msg_id) else None)


def parse_strict(body: bytes) -> tuple[list[Message], bool]:
    """Parse a client->server body; return ``(messages, is_batch)``.

    Raises :class:`JsonRpcParseError` (``PARSE_ERROR``) for a UTF-8 BOM,
    invalid UTF-8 (including encoded surrogates), invalid JSON, NaN and
    infinities (also numbers that overflow to infinity), duplicate keys in
    any object at any depth (compared after unescaping), and lone surrogates
    written as ``\\u`` escapes; (``INVALID_REQUEST``) for nesting deeper than
    :data:`MAX_DEPTH`, a top level that is not an object or a non-empty
    array, and any message that is not a well-formed JSON-RPC 2.0 request,
    notification or response (see ``_validate``), or a batch that repeats a
    request id.
    """
    if not isinstance(body, bytes):
        body = bytes(body)
    if body.startswith(b"\xef\xbb\xbf"):
        raise JsonRpcParseError(PARSE_ERROR, "a byte order mark is not allowed")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise JsonRpcParseError(PARSE_ERROR, "body is not valid UTF-8") from None
    try:
        document = _STRICT_DECODER.decode(text)
    except _Rejected as exc:
        raise JsonRpcParseError(PARSE_ERROR, str(exc)) from None
    except RecursionError:
        raise JsonRpcParseError(INVALID_REQUEST, "JSON nesting too deep") from None
    except json.JSONDecodeError as exc:
        raise JsonRpcParseError(PARSE_ERROR, f"invalid JSON: {exc.msg} at offset {exc.pos}") from None
    except ValueError:  # e.g. an integer beyond int()'s digit limit
        raise JsonRpcParseError(PARSE_ERROR, "invalid JSON number") from None

    # Each level opens a bracket, so a body with few brackets cannot nest too deep: skip the walk.
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and _nesting_exceeds(document, MAX_DEPTH):
        raise JsonRpcParseError(INVALID_REQUEST, f"JSON nesting deeper than {MAX_DEPTH} levels")
    # A lone surrogate can only come from a \u escape. Valid surrogate pairs
    # also match this cheap test; the encoder then tells the two apart.
    if "\\" in text and _SURROGATE_ESCAPE.search(text) is not None:
        try:
            dumps(document)
        except UnicodeEncodeError:
            raise JsonRpcParseError(PARSE_ERROR, "lone surrogate in JSON string") from None

    if type(document) is dict:
        return [_validate(document)], False
    if type(document) is not list:
        raise JsonRpcParseError(INVALID_REQUEST, "JSON-RPC message must be an object or an array")
    if not document:
        raise JsonRpcParseError(INVALID_REQUEST, "empty batch")
    messages = [_validate(element) for element in document]
    request_ids: set[str | int] = set()
    for message in messages:
        if message.kind == "request":
            request_id = message.obj["id"]
            if request_id in request_ids:
                raise JsonRpcParseError(INVALID_REQUEST, "duplicate request id in batch", request_id)
            request_ids.add(request_id)
    return messages, True


# --- lenient parsing ------------------------------------------------------


def _classify(obj: Any) -> Message:
    if type(obj) is not dict:
        raise JsonRpcParseError(INVALID_REQUEST, "JSON-RPC message is not an object")
    has_result = "result" in obj
    has_error = "error" in obj
    if "method" in obj:
        if type(obj["method"]) is not str or has_result or has_error:
            raise JsonRpcParseError(INVALID_REQUEST, "malformed JSON-RPC request")
        return Message(obj, "request" if "id" in obj else "notification")
    if has_result == has_error:
        # Both: peers would disagree on which one counts; neither: not JSON-RPC.
        raise JsonRpcParseError(INVALID_REQUEST, "malformed JSON-RPC response")
    return Message(obj, "error" if has_error else "response")


def parse_lenient(body: bytes | str) -> list[Message] | Message:
    """Parse a server->client body: a list for a batch, else one message.

    Uses the plain decoder (no duplicate-key or version checks) and raises
    :class:`JsonRpcParseError` only when the body is not JSON or the kind of a
    message cannot be told unambiguously.
    """
    try:
        document = json.loads(body)
    except RecursionError:
        raise JsonRpcParseError(PARSE_ERROR, "JSON nesting too deep") from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, number limits
        raise JsonRpcParseError(PARSE_ERROR, "invalid JSON") from None
    if type(document) is list:
        if not document:
            raise JsonRpcParseError(INVALID_REQUEST, "empty batch")
        return [_classify(element) for element in document]
    return _classify(document)
