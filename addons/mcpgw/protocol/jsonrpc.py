"""JSON-RPC 2.0 parsing: strict for what clients send, lenient for what servers send.

The gateway decides on a client's message and then forwards the original
bytes, so any input that the gateway and the upstream server could read
differently is a way around the policy: ``{"name": "search_code", "name":
"push_files"}`` is one tool call to a parser that keeps the first key and
another to one that keeps the last. :func:`parse_strict` therefore refuses
everything JSON parsers disagree on (duplicate keys, invalid or escaped lone
surrogates, NaN and infinities, a BOM, deep nesting) and every message whose
JSON-RPC shape is ambiguous.

Server messages are only read (to filter results and match responses), so
:func:`parse_lenient` uses the plain decoder, but still refuses messages whose
kind is ambiguous, such as a response with both ``result`` and ``error``.

The parts are modules of their own: jsonrpc_model (error codes, `Message`, error responses,
`dumps`), jsonrpc_parse (the two parsers) and mcp_methods (method names per revision,
`canonical_method`). This module re-exports their public names (the same objects: no call goes
through it), so callers import from here."""

from __future__ import annotations

from .jsonrpc_model import (
    INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, JsonRpcParseError, Message,
    MessageKind, dumps, error_response
)
from .jsonrpc_parse import MAX_DEPTH, parse_lenient, parse_strict
from .mcp_methods import KNOWN_METHODS, METHODS_BY_REVISION, REMOVED_REQUESTS_BY_REVISION, canonical_method, removed_in


__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "KNOWN_METHODS",
    "MAX_DEPTH",
    "METHOD_NOT_FOUND",
    "METHODS_BY_REVISION",
    "PARSE_ERROR",
    "REMOVED_REQUESTS_BY_REVISION",
    "JsonRpcParseError",
    "Message",
    "MessageKind",
    "canonical_method",
    "dumps",
    "error_response",
    "parse_lenient",
    "parse_strict",
    "removed_in",
]
