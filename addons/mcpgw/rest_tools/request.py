"""A tools/call's arguments as the HTTP request to the tool's REST API.

The caller chooses values, never the target: path parameters are percent-encoded whole (`/`
included, so a value is one segment), a value that would be a dot segment or empty is refused,
and the finished path must still lie under the tool's fixed upstream path. Query, header and
cookie values are encoded for their place; a header value with a control character is refused
(no header or request splitting). The host is always the route's service."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from ..routing import RouteTable
from .catalog import CompiledTool
from .settings import BODY_ARGUMENT

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadArguments(ValueError):
    """Arguments the validator let through that still cannot make a safe request."""


@dataclass(slots=True)
class RestRequest:
    method: str
    path: str  # upstream path, percent-encoded, with the query string
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None


def _scalar(value: Any, name: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise BadArguments(f"argument {name!r} must be a string, number or boolean here")


def _values(value: Any, name: str) -> list[str]:
    """OpenAPI's default form style with explode: an array repeats the parameter."""
    if isinstance(value, list):
        return [_scalar(v, name) for v in value]
    return [_scalar(value, name)]


def _path(tool: CompiledTool, arguments: dict[str, Any]) -> str:
    def fill(m: re.Match[str]) -> str:
        name = m.group(1)
        value = _scalar(arguments.get(name), name)
        if value in ("", ".", ".."):
            raise BadArguments(f"path argument {name!r} must not be empty, '.' or '..'")
        return quote(value, safe="")  # unreserved characters only stay as they are: '/' becomes %2F

    route_path = re.sub(r"\{([^{}]*)\}", fill, tool.path)
    upstream = RouteTable.upstream_path(tool.match, route_path)
    if not (upstream == tool.base or upstream.startswith(tool.base)) or \
            any(seg in (".", "..") for seg in upstream.split("/")):
        raise BadArguments("the path arguments lead outside the tool's path")  # defence in depth
    return upstream


def _query(tool: CompiledTool, arguments: dict[str, Any]) -> str:
    pairs: list[tuple[str, str]] = [(k, v.reveal()) for k, vs in tool.spec.query.items() for v in vs]
    for p in tool.by_location["query"]:
        if p.name in arguments:
            pairs += [(p.name, v) for v in _values(arguments[p.name], p.name)]
    return urlencode(pairs, quote_via=quote) if pairs else ""


def _headers(tool: CompiledTool, arguments: dict[str, Any]) -> list[tuple[str, str]]:
    out = [(k, v.reveal()) for k, vs in tool.spec.headers.items() for v in vs]
    for p in tool.by_location["header"]:
        if p.name in arguments:
            value = ",".join(_values(arguments[p.name], p.name))
            if _CONTROL.search(value):
                raise BadArguments(f"header argument {p.name!r} must not hold control characters")
            out.append((p.name, value))
    cookies = [f"{p.name}={quote(','.join(_values(arguments[p.name], p.name)), safe='')}"
               for p in tool.by_location["cookie"] if p.name in arguments]
    if cookies:
        out.append(("Cookie", "; ".join(cookies)))
    return out


def _body(tool: CompiledTool, arguments: dict[str, Any]) -> tuple[bytes | None, str | None]:
    spec = tool.spec.request_body
    if spec is None or BODY_ARGUMENT not in arguments:
        return None, None
    value = arguments[BODY_ARGUMENT]
    if spec.content_type == "application/json":
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode(), "application/json"
    if not isinstance(value, dict):
        raise BadArguments(f"argument {BODY_ARGUMENT!r} must be an object for a form body")
    pairs = [(k, v) for k, item in value.items() for v in _values(item, f"{BODY_ARGUMENT}.{k}")]
    return urlencode(pairs, quote_via=quote).encode(), "application/x-www-form-urlencoded"


def build_request(tool: CompiledTool, arguments: dict[str, Any]) -> RestRequest:
    path = _path(tool, arguments)
    query = _query(tool, arguments)
    body, ctype = _body(tool, arguments)
    headers = _headers(tool, arguments)
    if ctype is not None:
        headers.append(("Content-Type", ctype))
    return RestRequest(tool.spec.method, path + ("?" + query if query else ""), headers, body)
