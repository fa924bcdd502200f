"""One tools/call as a REST call: asynchronous, with the serving route's timeout, to the tool's
route's service only, with that route's credential mediation; the answer as an MCP tool result.

Every failure the API or the network can cause (an error status, a timeout, a refused
connection, a body too large) is a tool result with `isError: true`, never a gateway error, and
says nothing of the API's address or credentials; the gateway log has the details (without the
query string, which may carry an API key)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import httpx
from mitmproxy import http

from .. import credentials, redaction
from . import transform as rest_transform
from .catalog import CompiledTool
from .request import RestRequest

if TYPE_CHECKING:
    from ..context import FlowContext
    from ..upstream_proxy.settings import ProxySettings
    from .settings import ServerSettings

log = logging.getLogger("mcpgw.rest_tools")


class _NoQueryInHttpxLog(logging.Filter):
    """httpx logs every request's URL at INFO, outside the gateway's masked loggers; a REST
    tool's query string may carry an API key ({env://...}), so its log line goes without one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(a.copy_with(query=None) if isinstance(a, httpx.URL) and a.query else a
                                for a in record.args)
        return True


if not any(type(f).__name__ == _NoQueryInHttpxLog.__name__ for f in logging.getLogger("httpx").filters):  # reloads
    logging.getLogger("httpx").addFilter(_NoQueryInHttpxLog())

# The client's headers that describe its MCP request, not the REST call: never forwarded.
NOT_FORWARDED = frozenset({
    "host", "content-length", "content-type", "content-encoding", "transfer-encoding", "connection", "keep-alive",
    "upgrade", "te", "trailer", "proxy-connection", "expect", "accept", "accept-encoding", "origin",
    "mcp-session-id", "mcp-protocol-version", "mcp-method", "mcp-name", "last-event-id", "proxy-authorization"})
CLIENT_CREDENTIALS = frozenset({"authorization", "proxy-authorization", "cookie"})


class Refused(Exception):
    """The home route's credential mediation does not serve this caller."""


def _plan_names(ops: credentials.Operations) -> set[str]:
    names = {n.lower() for n in ops.remove.headers}
    names |= {n.lower() for pair in ops.rename.headers for n in pair}
    for op in (ops.replace, ops.add, ops.append):
        names |= {n.lower() for n, _ in op.headers}
    return names


def _is_credential(name: str) -> bool:
    return name in CLIENT_CREDENTIALS or bool(redaction.CREDENTIAL_NAME.search(name))


def outbound(ctx: "FlowContext", flow: http.HTTPFlow, tool: CompiledTool, rest: RestRequest,
             forward_client_headers: bool) -> http.Request:
    """The REST request, headers decided: the client's (as this route's phases left them), the
    tool's, then the tool's route's stored credential. A client credential goes only to the
    serving route's own service: a listener never hands it to another API."""
    svc = tool.service
    request = http.Request.make(rest.method, f"{svc.scheme}://{svc.authority}/", rest.body or b"")
    request.path = rest.path  # as built: percent-encoding kept
    own_service = tool.home == ctx.route_name
    compiled = credentials.route_credentials(ctx.snapshot.policy, tool.home)
    skip = {name.lower() for name, _ in rest.headers} | NOT_FORWARDED
    if compiled is not None:
        identity = ctx.identity
        if (identity is None or identity.method == "anonymous") and not compiled.config.allow_anonymous:
            raise Refused("this tool's API is only called for authenticated consumers")
        plan = compiled.plan_for(identity)
        skip |= _plan_names(plan.ops) | CLIENT_CREDENTIALS
    else:
        plan = None
    if forward_client_headers:
        for raw_name, raw_value in flow.request.headers.fields:
            name = raw_name.decode("latin-1").lower()
            if name in skip or (not own_service and _is_credential(name)):
                continue
            request.headers.add(raw_name.decode("latin-1"), raw_value.decode("latin-1"))
    for name, value in rest.headers:
        request.headers.add(name, value)
    request.headers["Host"] = svc.authority
    request.headers["Accept-Encoding"] = "identity"
    if plan is not None:
        plan.apply(request)
    rest_transform.apply(ctx.snapshot.policy, tool.home, request, own_service and forward_client_headers)
    return request


# One pool per event loop (tests run several) and proxy: (loop id, proxy URL, user, password) -> client.
_clients: dict[tuple[int, str | None, str | None, str | None], httpx.AsyncClient] = {}


def _client(proxy: "ProxySettings | None", scheme: str) -> httpx.AsyncClient:
    url = proxy.url_for(scheme) if proxy is not None else None
    user = proxy.auth_username if url is not None else None
    password = proxy.auth_password.reveal() if url is not None and proxy.auth_password is not None else None
    key = (id(asyncio.get_running_loop()), url, user, password)
    client = _clients.get(key)
    if client is None or client.is_closed:
        # No redirects (a 3xx is the API's answer), no proxy settings from the environment: only
        # the route's own proxy, its credentials sent to the proxy alone (Proxy-Authorization).
        via = httpx.Proxy(url, auth=(user, password) if user is not None else None) if url is not None else None
        client = _clients[key] = httpx.AsyncClient(follow_redirects=False, trust_env=False, proxy=via)
    return client


def _error(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": True}


def _result(status: int, reason: str, ctype: str, body: bytes) -> dict[str, Any]:
    text = body.decode("utf-8", errors="replace")
    result: dict[str, Any] = {"content": [{"type": "text", "text": text if status < 400 else
                                           f"HTTP {status} {reason}".rstrip() + (f"\n{text}" if text else "")}]}
    media = ctype.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and status < 400:  # structuredContent is an object
            result["structuredContent"] = parsed
    if status >= 400:
        result["isError"] = True
    return result


async def send(request: http.Request, settings: "ServerSettings", label: str,
               proxy: "ProxySettings | None" = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the tool result, what the audit record says about the call: with `start_ns`/`end_ns`,
    wall-clock bounds for the call's span, which the caller takes out of the audit note)."""
    url = httpx.URL(scheme=request.scheme, host=request.host, port=request.port,
                    raw_path=request.path.encode("ascii"))
    where = f"{request.method} {request.path.split('?', 1)[0]}"
    started, start_ns = time.monotonic(), time.time_ns()
    note: dict[str, Any] = {"method": request.method, "path": request.path.split("?", 1)[0], "start_ns": start_ns}
    headers = [(k, v) for k, v in request.headers.items(multi=True) if k.lower() != "content-length"]  # httpx's own
    try:
        async with _client(proxy, request.scheme).stream(request.method, url, headers=headers, content=request.raw_content or None,
                                    timeout=settings.timeout) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():  # decoded, limited as it arrives
                body += chunk
                if len(body) > settings.max_response_size:
                    note.update(status=response.status_code, error="too large")
                    return _error(f"The REST API's answer is larger than {settings.max_response_size} bytes"), note
    except httpx.TimeoutException:
        log.warning("tool %s: %s timed out after %s s", label, where, settings.timeout)
        note["error"] = "timeout"
        return _error(f"The REST API did not answer within {settings.timeout:g} s"), note
    except httpx.HTTPError as e:
        log.warning("tool %s: %s failed: %s", label, where, type(e).__name__)
        note["error"] = "unreachable"
        return _error("The REST API could not be reached"), note
    finally:
        note["ms"] = round((time.monotonic() - started) * 1000, 1)
        note["end_ns"] = time.time_ns()
    if response.status_code == 407 and proxy is not None and proxy.url_for(request.scheme) is not None:
        log.warning("tool %s: %s: the route's proxy refused its credentials (407)", label, where)
        note["error"] = "unreachable"  # the proxy's answer, not the API's: neither its body nor its status is the result
        return _error("The REST API could not be reached"), note
    note["status"] = response.status_code
    return _result(response.status_code, response.reason_phrase, response.headers.get("content-type", ""), bytes(body)), note
