"""Retries after a target answered (failover_criteria http_429, http_5xx, ...), without holding
streams back.

mitmproxy sends a flow's request to one server and relays that server's answer; it cannot send
the request again elsewhere once the answer's headers arrived, nor stream a body an addon
produces. A JSON request's answer is read whole anyway, so one to retry is held at its headers
(`holds`) and the next targets are asked from the response hook (`retry_answer`). A stream
request of a balanced route whose failover_criteria name answer statuses goes to this relay
instead, a loopback HTTP/1.1 server inside the gateway process: for each request it tries
the targets in the balancer's order (httpx), and relays the first answer that is not to be
retried chunk by chunk as it arrives (never buffered). A status is retried only while nothing
of the answer has been sent: the status line decides before the first byte of the body. The
last target's answer is relayed whatever it is.

Each try is the request as the gateway prepared it for the first target, retargeted: that
target's URL, key (request.swap_auth) and model/options (request.body_for_target). A request
naming MCP tools is not sent again after a target answered (the provider may have called them)
unless failover_criteria has non_idempotent. Connection failures and timeouts before the
answer's headers go to the next target under error/timeout as before.

The relay serves only requests the gateway registered: each carries a one-time random token
(RELAY_HEADER), consumed on use; anything else gets 403. It listens on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import h11
import httpx
from mitmproxy import http

from . import request as ai_request, targets

if TYPE_CHECKING:
    from ..context import FlowContext
    from .targets import TargetState
    from .request import LlmState
    from .settings import ModelOptions

log = logging.getLogger("mcpgw.ai")

RELAY_HEADER = "x-mcpgw-relay"
MAX_ERROR_BODY = 64 * 1024  # an answer that is retried is read at most this far, then dropped
MAX_JOBS = 10_000  # requests registered and not yet at the relay (each normally arrives at once)
MAX_JSON_ANSWER = 16 * 1024 * 1024  # a retried JSON request's answer, read whole (answers.MAX_JSON)
_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
                  b"proxy-connection", b"proxy-authenticate"})


@dataclass(slots=True)
class Job:
    ctx: "FlowContext"
    state: "LlmState"
    method: str
    headers: list[tuple[bytes, bytes]]  # as prepared for the first target
    body: bytes
    query: str  # the query string as prepared (the provider key parameter included, if any)


class Try(NamedTuple):
    target: "TargetState"
    request: httpx.Request
    model: str | None  # what this target is asked for: the call's model and options (cost) if it answers
    options: "ModelOptions"


def _verify() -> bool | ssl.SSLContext:
    """The providers' certificates are checked as mitmproxy checks upstream ones."""
    try:
        from mitmproxy import ctx as mitm
        options = mitm.options
    except (ImportError, AttributeError):
        return True
    if getattr(options, "ssl_insecure", False):
        return False
    ca = getattr(options, "ssl_verify_upstream_trusted_ca", None)
    return ssl.create_default_context(cafile=ca) if ca else True


async def _read(resp: httpx.Response, limit: int) -> bytes:
    body = bytearray()
    async for chunk in resp.aiter_raw():
        body += chunk
        if len(body) > limit:
            raise ValueError("answer too large")
    return bytes(body)


def _criteria(state: "LlmState") -> tuple[frozenset[int], bool, bool]:
    b = state.settings.balancer
    after_answer = not state.mcp_servers or "non_idempotent" in b.failover_criteria
    return (b.retry_statuses if after_answer else frozenset()), "error" in b.failover_criteria, "timeout" in b.failover_criteria


class Relay:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.port: int | None = None
        self._server: asyncio.base_events.Server | None = None
        self._starting = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None

    async def ensure_started(self) -> None:
        async with self._starting:
            if self._server is None:
                self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
                self.port = self._server.sockets[0].getsockname()[1]
                # TCP_NODELAY: httpcore writes a request's headers and body separately, and with Nagle
                # the body would wait for the provider's delayed ACK of the headers (milliseconds)
                transport = httpx.AsyncHTTPTransport(verify=_verify(), socket_options=[
                    (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
                self._client = httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)
                # mitmproxy lets every logger through at DEBUG; httpcore's per-step trace records
                # would cost more than the relay's own work
                logging.getLogger("httpcore").setLevel(logging.INFO)
                log.info("LLM retry relay listening on 127.0.0.1:%d", self.port)

    def close(self) -> None:
        """Synchronous (mitmproxy calls `done` from sync code on script reloads): the listening
        socket closes now, the client's pooled connections as soon as the event loop runs."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._client is not None:
            client, self._client = self._client, None
            try:
                asyncio.get_running_loop().create_task(client.aclose())
            except RuntimeError:  # no loop any more (shutdown): the process ends them
                pass
        self.jobs.clear()

    @staticmethod
    def job_of(ctx: "FlowContext", flow: http.HTTPFlow) -> Job:
        """After apply_target: the request as prepared for the first target."""
        req = flow.request
        return Job(ctx, ctx.ai, req.method, list(req.headers.fields), req.raw_content or b"", req.path.partition("?")[2])

    def register(self, ctx: "FlowContext", flow: http.HTTPFlow) -> None:
        """A stream: the request as prepared goes to the relay instead, with its token."""
        state: LlmState = ctx.ai
        req = flow.request
        token = secrets.token_urlsafe(24)
        while len(self.jobs) >= MAX_JOBS:  # flows that never reached the relay nor failed: the oldest go (403)
            self.jobs.pop(next(iter(self.jobs)))
        self.jobs[token] = self.job_of(ctx, flow)
        state.relay_token = token
        req.scheme, req.data.host, req.data.port = "http", "127.0.0.1", self.port
        req.headers[RELAY_HEADER] = token

    def forget(self, state: "LlmState") -> None:
        if state.relay_token is not None:
            self.jobs.pop(state.relay_token, None)
            state.relay_token = None

    # -- the server side -----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection from mitmproxy: requests one after the other (keep-alive, as mitmproxy
        reuses a server connection for the flows of one client connection)."""
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                token = await self._read_request(conn, reader)
                if token is None:
                    return  # closed between requests
                job = self.jobs.pop(token, None) if token else None
                if job is None:
                    await self._send_simple(conn, writer, 403, b'{"error":{"message":"not a gateway request","type":"forbidden"}}')
                    return
                job.state.relay_token = None
                await self._forward(job, conn, writer)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, asyncio.IncompleteReadError) as e:
            log.debug("relay connection ended: %s", e)
        except Exception:  # the flow gets a broken answer (an error for mitmproxy), never another target's data
            log.exception("LLM relay failed")
        finally:
            writer.close()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader) -> str | None:
        """The next request's token ("" without one); None: the connection closed before one."""
        token = ""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            if isinstance(event, h11.ConnectionClosed):
                return None
            if isinstance(event, h11.Request):
                token = next((v.decode("latin-1") for k, v in event.headers if k == RELAY_HEADER.encode()), "")
            elif isinstance(event, h11.EndOfMessage):
                return token  # the body is the job's (as the gateway prepared it), not what arrived here

    async def _send_simple(self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
        writer.write(conn.send(h11.Response(status_code=status, headers=[
            ("content-type", "application/json"), ("content-length", str(len(body))), ("connection", "close")])))
        writer.write(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        await writer.drain()

    def _plan(self, job: Job, tries: list["TargetState"], first: "TargetState") -> list[Try]:
        """Each target's own copy of the request; a target serving another model than the one the
        client named is left out."""
        plan = []
        for t in tries:
            state = job.state
            fake = http.Request.make(job.method, f"http://x/?{job.query}" if job.query else "http://x/")
            fake.headers = http.Headers(job.headers)
            fake.headers.pop(RELAY_HEADER, None)
            body, model, options = job.body, state.model, state.options
            if t is not first:
                s = state.settings
                ai_request.swap_auth(fake, ai_request.auth_of(s, first), ai_request.auth_of(s, t))
                if body:
                    found = ai_request.body_for_target(job.ctx, state, body, t)
                    if found is None:
                        continue
                    body, model, options = found
            fake.headers["host"] = t.authority
            fake.headers.pop("content-length", None)
            query = fake.path.partition("?")[2]
            url = f"{t.scheme}://{t.authority}{t.path}{state.settings.endpoint}" + (f"?{query}" if query else "")
            # no read timeout: a model may think for minutes before its first token, and between tokens
            timeout = httpx.Timeout(None, connect=state.settings.balancer.connect_timeout)
            plan.append(Try(t, self._client.build_request(job.method, url, headers=list(fake.headers.fields),
                                                          content=body, timeout=timeout), model, options))
        return plan

    # -- JSON requests: no relay, the next targets from the response hook -----------------------

    def holds(self, state: "LlmState", resp: http.Response) -> bool:
        """Response headers of a JSON request sent straight to its first target: whether this
        answer is one to retry (then it is read whole, as JSON answers are, and not passed on)."""
        if state.retry_job is None:
            return False
        declared = resp.headers.get("content-length", "")
        if resp.status_code not in _criteria(state)[0] or (declared.isdigit() and int(declared) > MAX_ERROR_BODY):
            state.retry_job = None
            return False
        resp.stream = False
        return True

    async def retry_answer(self, ctx: "FlowContext", flow: http.HTTPFlow) -> None:
        """The response hook of a held answer: the next targets in order, each read whole; the first
        answer not to retry (or the last one's) replaces the held one before the client sees it."""

        state: LlmState = ctx.ai
        job, state.retry_job = state.retry_job, None
        statuses, on_error, on_timeout = _criteria(state)
        first = state.target
        plan = self._plan(job, [t for t in state.candidates if t is not first], first)
        for i, (t, req, model, options) in enumerate(plan):
            last = i == len(plan) - 1
            targets.switch(state, t)
            state.model, state.options = model, options
            try:
                resp = await self._client.send(req, stream=True)
                try:
                    body = await _read(resp, MAX_JSON_ANSWER)
                finally:
                    await resp.aclose()
            except (httpx.TimeoutException, httpx.TransportError, ValueError) as e:
                timed_out = isinstance(e, httpx.TimeoutException)
                t.failed(state.settings, "timed out" if timed_out else f"no answer ({type(e).__name__})")
                if not last and (on_timeout if timed_out else on_error):
                    continue
                targets.answered(state, 502, reached=False)
                flow.response = ai_request.ai_error(502, "The provider did not answer", kind="server_error")
                return
            if resp.status_code in statuses and not last:
                t.failed(state.settings, f"HTTP {resp.status_code}")
                continue
            targets.answered(state, resp.status_code)
            state.first_token = time.monotonic()  # a JSON answer's first token comes with it
            flow.response = http.Response.make(resp.status_code, body, [(k, v) for k, v in resp.headers.raw
                                                                      if k.lower() not in _HOP and k.lower() != b"content-length"])
            return

    async def _forward(self, job: Job, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:

        state = job.state
        first: TargetState = state.target
        statuses, on_error, on_timeout = _criteria(state)
        plan = self._plan(job, [first, *state.candidates], first)
        for i, (t, req, model, options) in enumerate(plan):
            last = i == len(plan) - 1
            if t is not state.target:
                targets.switch(state, t)
                state.model, state.options = model, options
            try:
                resp = await self._client.send(req, stream=True)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                timed_out = isinstance(e, httpx.TimeoutException)
                t.failed(state.settings, "timed out" if timed_out else f"no answer ({type(e).__name__})")
                if not last and (on_timeout if timed_out else on_error):
                    continue
                await self._send_simple(conn, writer, 502, b'{"error":{"message":"The provider did not answer",'
                                                           b'"type":"server_error","param":null,"code":null}}')
                return
            if resp.status_code in statuses and not last:
                t.failed(state.settings, f"HTTP {resp.status_code}")
                await self._drop(resp)
                continue
            await self._relay(resp, conn, writer)
            return

    async def _drop(self, resp: httpx.Response) -> None:  # (a retried answer of a stream)
        try:
            read = 0
            async for chunk in resp.aiter_raw():
                read += len(chunk)
                if read > MAX_ERROR_BODY:
                    break
        except httpx.HTTPError:
            pass
        finally:
            await resp.aclose()

    async def _relay(self, resp: httpx.Response, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        try:
            headers = [(k, v) for k, v in resp.headers.raw if k.lower() not in _HOP]
            writer.write(conn.send(h11.Response(status_code=resp.status_code, headers=headers,
                                                reason=resp.reason_phrase.encode("latin-1", "replace"))))
            await writer.drain()
            transport = writer.transport
            async for chunk in resp.aiter_raw():  # as the provider sends it: streams are never held
                writer.write(conn.send(h11.Data(data=chunk)))
                if transport.get_write_buffer_size() > MAX_ERROR_BODY:  # (written at once otherwise: no wait)
                    await writer.drain()
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        finally:
            await resp.aclose()


relay = Relay()
