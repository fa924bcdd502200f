"""scripts/bench_integrity.py's floor for held answers: loaded after the gateway, it holds whole the
answers to requests carrying `X-Bench-Hold` (which the gateway would stream) and does nothing
else, so a route without integrity shows what holding an answer costs by itself."""

from mitmproxy import http


class HoldAnswers:
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None and "x-bench-hold" in flow.request.headers:
            flow.response.stream = False


addons = [HoldAnswers()]
