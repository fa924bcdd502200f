"""Benchmark reference (scripts/bench): mitmdump doing the least any addon that inspects request
bodies before forwarding must do, and nothing else.

Each request is held until its body is complete, so mitmproxy runs the `request` hook before it
forwards anything (with request streaming, bare mitmdump forwards first and runs the hook while the
upstream works). Responses stream, as the gateway's do. The benchmark's "buffered" target runs
bare mitmdump with this script, so the gateway's overhead splits into this part, which no body
inspection avoids, and the gateway's own work."""

from mitmproxy import http


class HoldRequestBodies:
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        flow.request.stream = False

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            flow.response.stream = True


addons = [HoldRequestBodies()]
