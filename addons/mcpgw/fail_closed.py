"""The gateway hooks' guard: an exception inside answers the client with an error instead of
escaping to mitmproxy, which would forward the flow."""

from __future__ import annotations

import logging

from mitmproxy import http

from .responses import gateway_failure, replacing_upstream

log = logging.getLogger("mcpgw")


class FailClosed:
    """`with`: an exception inside answers the client with an error instead of escaping to
    mitmproxy, which would forward the flow. (A class, not a generator-based context manager:
    it is entered on every flow.)"""

    __slots__ = ("flow", "what", "status", "at_headers")

    def __init__(self, flow: http.HTTPFlow, what: str, status: int, at_headers: bool):
        self.flow, self.what, self.status, self.at_headers = flow, what, status, at_headers

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, traceback) -> bool:
        if kind is None or not issubclass(kind, Exception):
            return False
        flow = self.flow
        log.error("MCP gateway could not %s (%s); refusing", self.what, flow.request.pretty_url,
                  exc_info=(kind, error, traceback))
        resp = gateway_failure(flow.request, self.what)
        resp.status_code = self.status
        flow.response = replacing_upstream(resp) if self.at_headers else resp
        return True
