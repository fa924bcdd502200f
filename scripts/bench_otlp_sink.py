"""An OTLP/HTTP receiver for scripts/bench --telemetry: accepts every export (traces, metrics) and
discards it, so the traced gateway pays for building and exporting spans, not for a slow collector.

    python scripts/bench_otlp_sink.py PORT"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

READY = "otlp sink listening"


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a collector serves the exporter's session

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")  # an empty Export*ServiceResponse
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)
    print(READY, flush=True)
    server.serve_forever()
