"""Wire formats the gateway reads and writes: SSE streams and JSON-RPC 2.0 messages."""

from .jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    KNOWN_METHODS,
    MAX_DEPTH,
    METHOD_NOT_FOUND,
    METHODS_BY_REVISION,
    PARSE_ERROR,
    JsonRpcParseError,
    Message,
    MessageKind,
    canonical_method,
    dumps,
    error_response,
    parse_lenient,
    parse_strict,
)
from .sse import DEFAULT_MAX_EVENT_SIZE, SSEError, SSEEvent, SSEParser

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "KNOWN_METHODS",
    "MAX_DEPTH",
    "METHOD_NOT_FOUND",
    "METHODS_BY_REVISION",
    "PARSE_ERROR",
    "JsonRpcParseError",
    "Message",
    "MessageKind",
    "SSEError",
    "SSEEvent",
    "SSEParser",
    "canonical_method",
    "dumps",
    "error_response",
    "parse_lenient",
    "parse_strict",
]
