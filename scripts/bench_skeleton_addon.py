"""Benchmark reference (scripts/bench_floor.py): the least a governing addon does per call on top
of the held floor (scripts/bench_buffered_addon.py), with none of the gateway's guarantees.

It holds request bodies, parses each as JSON, decides a `tools/call` by one set lookup (refusing
other tools with 403), streams answers, and appends one JSON line per call to a file
(MCPGW_SKELETON_AUDIT, default /dev/null). No routing, identity, sessions, redaction, canonical
forms or fail-closed handling: it is not a gateway, only a measure of what parsing, deciding and
recording cost in a mitmproxy addon."""

import json
import os

from mitmproxy import http

ALLOWED_TOOLS = {"search_repositories", "get_file_contents"}


class GoverningSkeleton:
    def __init__(self) -> None:
        self.audit = open(os.environ.get("MCPGW_SKELETON_AUDIT", os.devnull), "a", buffering=1 << 16)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        flow.request.stream = False

    def request(self, flow: http.HTTPFlow) -> None:
        try:
            message = json.loads(flow.request.content or b"null")
        except ValueError:
            flow.response = http.Response.make(400, b"request body is not JSON")
            return
        method = message.get("method") if isinstance(message, dict) else None
        if method == "tools/call" and (message.get("params") or {}).get("name") not in ALLOWED_TOOLS:
            flow.response = http.Response.make(403, b"tool not allowed")
        flow.metadata["skeleton_method"] = method

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            flow.response.stream = True

    def response(self, flow: http.HTTPFlow) -> None:
        self.audit.write(json.dumps({"method": flow.metadata.get("skeleton_method"), "path": flow.request.path,
                                     "status": flow.response.status_code if flow.response else None}) + "\n")

    def done(self) -> None:
        self.audit.close()


addons = [GoverningSkeleton()]
