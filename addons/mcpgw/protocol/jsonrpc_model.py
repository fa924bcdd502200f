"""JSON-RPC 2.0 messages as the gateway holds and writes them: the error codes, a decoded message
(`Message`), the refusal of a body (`JsonRpcParseError`), error responses and the compact encoder.
The parsers (jsonrpc_parse) and the MCP method names (mcp_methods) build on this module."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal


PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

MessageKind = Literal["request", "notification", "response", "error"]


class JsonRpcParseError(Exception):
    """A body that is not an acceptable JSON-RPC message.

    ``code`` is the JSON-RPC error code to answer with, ``message`` a
    description safe to send to the client, ``id`` the offending message's
    id when it could be recovered (else ``None``).
    """

    def __init__(self, code: int, message: str, id: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id

    def to_response(self) -> dict[str, Any]:
        return error_response(self.id, self.code, self.message)


@dataclass(slots=True)
class Message:
    """One decoded JSON-RPC message; ``obj`` keeps the members in received order."""

    obj: dict[str, Any]
    kind: MessageKind

    @property
    def id(self) -> Any:
        return self.obj.get("id")

    @property
    def method(self) -> str | None:
        return self.obj.get("method")

    @property
    def params(self) -> Any:
        return self.obj.get("params")

    @property
    def result(self) -> Any:
        return self.obj.get("result")

    @property
    def error(self) -> Any:
        return self.obj.get("error")


def error_response(id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    """Build a JSON-RPC error response (``data`` is left out when ``None``)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": id, "error": error}


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dumps(obj: Any) -> bytes:
    """Serialize to compact UTF-8 JSON.

    Raises ``ValueError`` rather than emit something that is not JSON: NaN or
    infinite floats, or strings holding lone surrogates.
    """
    return _ENCODER.encode(obj).encode("utf-8")


def _quote(text: str, limit: int = 40) -> str:
    return json.dumps(text if len(text) <= limit else text[:limit] + "...")
