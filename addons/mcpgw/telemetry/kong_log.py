"""Kong-shaped log records (the serializer behind Kong's file-log and http-log) for a route's
`telemetry.file_log` / `telemetry.http_log`, and the two sinks that write them.

A record is built per HTTP request from the audit records of the flow, so it holds nothing the
audit log leaves out: no credential, no query string (Kong's `querystring` is always `{}`
here), and of the headers only a fixed list that never carries one. The gateway's decisions ride
under `mcp` (Kong's own MCP fields are not part of this serializer).

Both sinks run in their own thread with a bounded queue: a slow disk or a slow endpoint never
holds a request; records beyond the queue are dropped and counted."""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from mitmproxy import http

if TYPE_CHECKING:
    from ..context import FlowContext
    from .settings import FileLog, HttpLog

log = logging.getLogger("mcpgw.telemetry")

# Headers a record may show: none of them carries a credential or a session id.
SAFE_REQUEST_HEADERS = ("host", "user-agent", "accept", "content-type", "content-length", "mcp-protocol-version")
SAFE_RESPONSE_HEADERS = ("content-type", "content-length", "cache-control")
_STOP = object()


def _headers(headers: http.Headers, names: tuple[str, ...]) -> dict[str, str]:
    return {n: headers[n] for n in names if n in headers}


def kong_record(fctx: FlowContext | None, flow: http.HTTPFlow, records: list[dict[str, Any]]) -> dict[str, Any]:
    first = records[0]
    req, resp = flow.request, flow.response
    timing = first.get("duration_ms")
    upstream_ms = first.get("upstream_ms")
    out: dict[str, Any] = {
        "request": {"id": flow.id, "method": req.method, "uri": first["http"]["path"],
                    "url": (fctx.public_base if fctx is not None and fctx.public_base else "") + first["http"]["path"],
                    "size": first.get("request_bytes"), "querystring": {},
                    "headers": _headers(req.headers, SAFE_REQUEST_HEADERS)},
        "response": {"status": first["http"]["status"], "size": first.get("response_bytes"),
                     "headers": _headers(resp.headers, SAFE_RESPONSE_HEADERS) if resp is not None else {}},
        "latencies": {"request": round(timing) if timing is not None else None,
                      "proxy": round(upstream_ms) if upstream_ms is not None else -1,
                      "kong": round(timing - upstream_ms) if timing is not None and upstream_ms is not None else
                      (round(timing) if timing is not None else None), "receive": 0},
        "client_ip": first.get("client"),
        "started_at": int(req.timestamp_start * 1000),
        "source": "kong" if first["http"]["upstream_status"] is None else "upstream",
    }
    if fctx is not None and fctx.match is not None:
        compiled = fctx.match.route
        svc = compiled.service
        out["route"] = {"name": compiled.name, "paths": list(compiled.route.paths)}
        out["service"] = {"name": compiled.route.service, "host": svc.host, "port": svc.port,
                          "protocol": svc.scheme, "path": svc.path}
        if first["http"]["upstream_status"] is not None:
            out["upstream_uri"] = req.path.split("?", 1)[0]
    consumer = first.get("consumer")
    if consumer:
        out["consumer"] = {"username": consumer["name"], "id": consumer.get("id"), "custom_id": consumer.get("custom_id")}
    out["mcp"] = [{k: r.get(k) for k in ("decision", "rule", "reason", "primitive", "name")} |
                  {"method": (r.get("jsonrpc") or {}).get("method"), "id": (r.get("jsonrpc") or {}).get("id")}
                  for r in records if r.get("jsonrpc")]
    return out


class _Sink:
    """A thread draining a bounded queue of records."""

    name = "sink"

    def __init__(self, max_entries: int):
        self.queue: queue.Queue = queue.Queue(max_entries)
        self.sent = self.dropped = 0
        self.thread = threading.Thread(target=self._run, name=f"mcpgw-{self.name}", daemon=True)
        self.thread.start()

    def submit(self, record: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        try:
            self.queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self.thread.join(timeout)

    def _run(self) -> None:
        raise NotImplementedError


class FileSink(_Sink):
    name = "file-log"

    def __init__(self, settings: FileLog):
        self.path = settings.path
        super().__init__(10000)

    def _run(self) -> None:
        f = sys.stdout if self.path == "-" else None
        checked = 0.0
        while True:
            item = self.queue.get()
            if item is _STOP:
                if f is not None and f is not sys.stdout:
                    f.close()
                return
            try:
                if f is not None and f is not sys.stdout and time.monotonic() - checked > 1.0:
                    checked = time.monotonic()
                    if not _same_file(self.path, f):  # moved or removed by logrotate: a new file at the path
                        f.close()
                        f = None
                if f is None:
                    f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open by the thread
                f.write(json.dumps(item, separators=(",", ":"), ensure_ascii=False) + "\n")
                f.flush()
                self.sent += 1
            except (OSError, ValueError) as e:
                self.dropped += 1
                log.error("file-log %s: a record could not be written (%s)", self.path, e)
                f = None


def _same_file(path: str, f) -> bool:
    try:
        a, b = os.stat(path), os.fstat(f.fileno())
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class HttpSink(_Sink):
    name = "http-log"

    def __init__(self, settings: HttpLog):
        self.settings = settings
        super().__init__(settings.max_entries)

    def _run(self) -> None:
        s = self.settings
        headers = {**{k: v.reveal() for k, v in s.headers.items()}, "content-type": s.content_type}
        with httpx.Client(timeout=s.timeout, follow_redirects=False) as client:
            while True:
                item = self.queue.get()
                if item is _STOP:
                    return
                batch, stop = [item], False
                deadline = time.monotonic() + s.max_coalescing_delay
                while len(batch) < s.max_batch_size:
                    try:
                        more = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        break
                    if more is _STOP:
                        stop = True
                        break
                    batch.append(more)
                body = batch[0] if s.max_batch_size == 1 else batch  # Kong: one object, or an array
                try:
                    answer = client.request(s.method, s.endpoint, headers=headers,
                                            content=json.dumps(body, separators=(",", ":")).encode())
                    if answer.status_code >= 400:
                        raise httpx.HTTPStatusError(f"HTTP {answer.status_code}", request=answer.request,
                                                    response=answer)
                    self.sent += len(batch)
                except httpx.HTTPError as e:
                    self.dropped += len(batch)
                    # the host only: an endpoint's path or query string may carry a token
                    log.error("http-log to %s: %d record(s) lost (%s)", urlsplit(s.endpoint).hostname, len(batch),
                              type(e).__name__)
                if stop:
                    return
