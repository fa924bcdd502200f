"""The audit log: a mitmproxy addon that turns every governed flow into audit records
(`audit.build`) and appends them to a hash-chained JSON-lines file (`auditchain`).

    --set mcp_audit=/var/log/mcp-gateway/audit.jsonl     (or "-" for standard output)

Hooks only build plain dicts and put them on a queue; a background thread serializes, hashes and
writes them, so the event loop never waits for the disk. Everything queued is written, flushed and
fsynced when mitmproxy shuts down cleanly. After a logrotate-style rename the writer notices within
a second and opens a new file at the configured path; `mcp.audit.reopen` does it at once."""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, BinaryIO, Callable

from mitmproxy import command, ctx, exceptions, http

from . import audit, context, redaction
from .auditchain import BrokenRecord, ChainHead, fsync, read_head, seal
from .policy.store import PolicyStore

log = logging.getLogger("mcpgw.audit")

CAPTURE_LIMIT = 1024 * 1024  # streamed response bytes kept per flow for payload logging
_BATCH = 512
_STOP = object()


class _Reopen:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result = ""


class ChainWriter:
    """Appends sealed records to one target (a path, or "-" for stdout) from its own thread."""

    def __init__(self, target: str, fsync_interval: float = 1.0):
        self.target = target
        self.head = ChainHead()
        self.written = 0
        self.failed = 0
        self._fsync_interval = fsync_interval
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._file: BinaryIO | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._last_check = self._last_fsync = 0.0
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        """Open the target and continue its chain. Raises OSError or BrokenRecord."""
        if self.target == "-":
            self._file = sys.stdout.buffer
        else:
            self._open_path(initial=True)
        self._thread = threading.Thread(target=self._run, name="mcpgw-audit-writer", daemon=True)
        self._thread.start()

    def submit(self, record: audit.PendingRecord) -> None:
        self._queue.put(record)

    def reopen(self, timeout: float = 5.0) -> str:
        request = _Reopen()
        self._queue.put(request)
        if not request.done.wait(timeout):
            return "reopen requested; the writer is busy (see the log for the outcome)"
        return request.result

    def close(self) -> None:
        """Write everything queued, fsync and close. Blocks until done."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join()
        self._thread = None

    # -- writer thread -------------------------------------------------------------------------

    def _open_path(self, initial: bool) -> None:
        path = Path(self.target)
        f = open(path, "ab")
        try:
            head, damaged = read_head(path)
            if damaged:
                log.error("audit file %s ends with %d damaged line(s); continuing the chain after seq %d "
                          "(audit verify will report them)", path, damaged, head.seq)
            if f.tell() > 0:
                with open(path, "rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        f.write(b"\n")  # never glue a record onto a line cut short
        except BaseException:  # not swallowed: the file is closed and the error goes on to the caller
            f.close()
            raise
        if initial or head.seq > 0:
            self.head = head
        # else: a fresh file after rotation continues the chain of the file before it
        st = os.fstat(f.fileno())
        self._file, self._identity = f, (st.st_dev, st.st_ino)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            try:
                while len(batch) < _BATCH:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            self._follow_rotation()
            stop = False
            for item in batch:
                if item is _STOP:
                    stop = True
                elif isinstance(item, _Reopen):
                    item.result = self._reopen()
                    item.done.set()
                else:
                    self._write(item)
            self._flush(force=stop)
            if stop:
                self._close_file()
                return

    def _write(self, pending: audit.PendingRecord) -> None:
        try:
            line, head = seal(pending.finish(), self.head)
        except Exception:  # after the response: nothing is forwarded here; the loss is counted and exported
            self.failed += 1
            log.exception("audit record could not be serialized; it is missing from the log")
            return
        try:
            assert self._file is not None
            self._file.write(line)
        except (OSError, ValueError) as e:
            self.failed += 1
            log.error("audit record seq %d could not be written (%s); it is missing from the log", head.seq, e)
            return
        self.head = head
        self.written += 1

    def _flush(self, force: bool) -> None:
        if self._file is None:
            return
        try:
            now = time.monotonic()
            if force or now - self._last_fsync >= self._fsync_interval:
                fsync(self._file)
                self._last_fsync = now
            else:
                self._file.flush()
        except (OSError, ValueError) as e:
            log.error("audit log flush failed: %s", e)

    def _follow_rotation(self) -> None:
        """Reopen when the path no longer names the open file (renamed or removed by logrotate)."""
        if self.target == "-" or time.monotonic() - self._last_check < 1.0:
            return
        self._last_check = time.monotonic()
        try:
            st = os.stat(self.target)
            if (st.st_dev, st.st_ino) == self._identity:
                return
        except OSError:
            pass
        log.info("audit file %s was moved or removed; opening a new one", self.target)
        self._reopen()

    def _reopen(self) -> str:
        if self.target == "-":
            return "audit records go to standard output; nothing to reopen"
        old = self._file
        try:
            self._open_path(initial=False)
        except (OSError, BrokenRecord) as e:
            log.error("cannot reopen audit file %s (%s); still writing to the open file", self.target, e)
            return f"reopen failed: {e}"
        if old is not None and old is not self._file:
            fsync(old)
            old.close()
        return f"audit file {self.target} reopened; chain continues after seq {self.head.seq}"

    def _close_file(self) -> None:
        if self._file is None:
            return
        try:
            fsync(self._file)
            if self._file is not sys.stdout.buffer:
                self._file.close()
        except (OSError, ValueError) as e:
            log.error("closing the audit log failed: %s", e)
        self._file = None


Observer = Callable[[http.HTTPFlow, list[dict[str, Any]]], None]


def _audit_target(value: str) -> str:
    """The mcp_audit option: "" (off), "-" (stdout) or a file in an existing directory."""
    target = value.strip()
    if not target or target == "-":
        return target
    path = Path(target).expanduser()
    if path.is_dir():
        raise exceptions.OptionsError(f"mcp_audit: {path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise exceptions.OptionsError(f"mcp_audit: directory {path.parent} does not exist")
    return str(path)


class AuditLog:
    """Builds audit records for governed flows; writes them (mcp_audit) and tells observers
    (metrics). Runs after the gateway's own hooks, as a child addon of it."""

    def __init__(self, store: PolicyStore):
        self.store = store
        self.writer: ChainWriter | None = None
        self.observers: list[Observer] = []
        # whether an observer reads records' response_bytes (Kong's log records do, spans do not):
        # counting a streamed answer wraps its every chunk in a Python call
        self.size_readers: list[Callable[[], bool]] = []
        self._build_failures = 0
        self._closed_written = self._closed_failed = 0  # totals of writers already closed
        self._startup_error: str | None = None  # an audit log was asked for and could not be opened
        self._seen: weakref.WeakKeyDictionary[http.HTTPFlow, audit.Observation] = weakref.WeakKeyDictionary()

    def load(self, loader) -> None:
        loader.add_option("mcp_audit", str, "",
                          "Audit log: a file to append hash-chained JSON lines to, or '-' for standard output. "
                          "Empty: no audit log.")

    def configure(self, updated: set[str]) -> None:
        # The file is opened here rather than in `running`: after a script reload mitmproxy
        # configures the new addon but does not run its `running` hook again.
        if "mcp_audit" not in updated:
            return
        try:
            target = _audit_target(ctx.options.mcp_audit)
            if self.writer is not None and self.writer.target == target:
                return
            new = self._open_writer(target) if target else None
        except exceptions.OptionsError as e:
            self._startup_error = self._startup_error or str(e)
            raise
        if new is not None:
            self._startup_error = None
        old, self.writer = self.writer, new
        if old is not None:  # switching files: the old writer first finishes what it has queued
            self._close_writer(old)

    def running(self) -> None:
        if self._startup_error is not None:
            print(f"MCP gateway: {self._startup_error}", file=sys.stderr, flush=True)
            raise SystemExit(1)  # an audit log was asked for: never run without it

    def done(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            self._close_writer(writer)

    @property
    def records_written(self) -> int:
        return self._closed_written + (self.writer.written if self.writer else 0)

    @property
    def records_lost(self) -> int:
        return self._build_failures + self._closed_failed + (self.writer.failed if self.writer else 0)

    def _close_writer(self, writer: ChainWriter) -> None:
        writer.close()
        self._closed_written += writer.written
        self._closed_failed += writer.failed
        head = writer.head
        log.info("audit log %s closed at seq %d, hash %s", writer.target, head.seq, head.hash)

    def _open_writer(self, target: str) -> ChainWriter:
        writer = ChainWriter(target)
        try:
            writer.open()
        except (OSError, BrokenRecord) as e:
            raise exceptions.OptionsError(f"mcp_audit: cannot open {target}: {e}") from None
        where = "standard output" if target == "-" else target
        log.info("audit log: %s, chain continues after seq %d", where, writer.head.seq)
        return writer

    @command.command("mcp.audit.reopen")
    def reopen(self) -> str:
        """Reopen the audit file (after logrotate moved it); the hash chain continues."""
        if self.writer is None:
            return "no audit log configured (set mcp_audit)"
        result = self.writer.reopen()
        log.info("mcp.audit.reopen: %s", result)
        return result

    # -- hooks ---------------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if self.writer is None and not self.observers:
            return  # neither an audit file nor metrics: nothing to observe
        if context.get(flow) is None and flow.response is None:
            return  # not governed (intercept mode passes it through untouched)
        self._seen[flow] = audit.Observation(client_path=flow.request.path.split("?", 1)[0],
                                             answered_by_gateway=flow.response is not None)

    def request(self, flow: http.HTTPFlow) -> None:
        obs = self._seen.get(flow)
        if obs is not None and flow.response is not None:
            obs.answered_by_gateway = True

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        obs = self._seen.get(flow)
        resp = flow.response
        if obs is None or resp is None or not resp.stream or obs.answered_by_gateway:
            return  # (mitmproxy sends the gateway's own answers whole, whatever `stream` says)
        if self.writer is None and not any(reads() for reads in self.size_readers):
            return  # nobody reads the size (nor the payload, which only the file keeps)
        fctx = context.get(flow)
        keep = fctx is not None and bool(fctx.messages) and audit.logs_payloads(fctx)
        resp.stream = _counting_stream(resp.stream, obs, keep)

    def response(self, flow: http.HTTPFlow) -> None:
        self._record(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._record(flow)

    def _record(self, flow: http.HTTPFlow) -> None:
        obs = self._seen.get(flow)
        if obs is None or obs.recorded:
            return
        obs.recorded = True
        if self.writer is None and not self.observers:
            return
        fctx = context.get(flow)
        try:
            redact = redaction.for_snapshot(fctx.snapshot) if fctx is not None else redaction.redact
            pending = audit.build(fctx, flow, obs, redact=redact)
        except Exception:  # after the response: nothing is forwarded here; the loss is counted and exported
            self._build_failures += 1
            log.exception("could not build the audit record of %s %s", flow.request.method, flow.request.pretty_url)
            return
        records = [p.record for p in pending]
        for observe in self.observers:
            try:
                observe(flow, records)
            except Exception:  # one observer (metrics) failing must not cost the audit record
                log.exception("audit observer failed")
        if self.writer is not None:
            for p in pending:
                self.writer.submit(p)


def _counting_stream(inner: Any, obs: audit.Observation, keep: bool) -> Callable[[bytes], list[bytes]]:
    """Wrap a response stream (True or a callable) to count the bytes relayed to the client and,
    for payload logging, keep the first CAPTURE_LIMIT of them."""
    obs.streamed_bytes = 0
    if keep:
        obs.captured = bytearray()

    def relay(chunk: bytes) -> list[bytes]:
        # A list without empty chunks: mitmproxy sends each element as a body chunk, and an empty
        # one would end an HTTP/1.1 chunked response early.
        out = inner(chunk) if callable(inner) else chunk
        chunks = [c for c in ([out] if isinstance(out, bytes) else out) if c]
        for c in chunks:
            obs.streamed_bytes = (obs.streamed_bytes or 0) + len(c)
            if obs.captured is not None and len(obs.captured) < CAPTURE_LIMIT:
                obs.captured += c[:CAPTURE_LIMIT - len(obs.captured)]
        return chunks

    return relay
