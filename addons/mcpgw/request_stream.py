"""Request bodies at the transport: a refused request is answered without its body being read, and
a governed body is counted as it arrives, never held past its limit.

mitmproxy reads a request's whole body into memory before it sends any response, even one an
addon set at request headers (`HttpStream.state_consume_request_body`), and its only bound,
the `body_size_limit` option, is global: it would also cap pass-through traffic and buffered
responses, and answers with an HTML page. So each HTTP request stream runs as a subclass of
mitmproxy's `HttpStream` that

- sends a response set at request headers at once, while the body is still coming, then reads
  no more of it than it must: it discards what arrives for at most LINGER_BYTES / LINGER_SECONDS
  (so that a client still sending can read the answer rather than get a reset; nginx's "lingering
  close") and then stops reading: HTTP/1 closes the connection (the answer says `Connection:
  close`), HTTP/2 and 3 reset the stream;
- for a flow given a body limit (`limit`, by a header phase), answers the phase's refusal the same
  way as soon as the bytes received pass the limit, chunked or not, including bytes that arrive
  while an asynchronous header phase (JWKS, introspection) still runs.

Streams without a gateway answer at request headers and without a limit (pass-through traffic)
behave exactly as mitmproxy's own. Relies on mitmproxy 12's HttpStream internals; `install`
checks that they are there and otherwise leaves mitmproxy as it is (refusals then still happen,
after the body: slower, never open)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from mitmproxy import http, version
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http import (DropStream, ErrorCode, HttpResponseHeadersHook, RequestData,
                                         RequestEndOfMessage, RequestTrailers, ResponseEndOfMessage,
                                         ResponseProtocolError, SendHttp)
from mitmproxy.proxy.utils import expect

log = logging.getLogger("mcpgw.request_stream")

LINGER_BYTES = 1024 * 1024  # request body discarded after an early answer before the gateway stops reading
LINGER_SECONDS = 5.0  # and the longest it waits for the client to finish sending

_LIMIT = "_mcp_body_limit"  # flow attribute, like context.py's: never part of a saved or copied flow
_NEEDED = ("state_wait_for_request_headers", "state_consume_request_body", "send_response", "check_killed",
           "state_done", "state_errored", "handle_event")


@dataclass(frozen=True, slots=True)
class BodyLimit:
    max_bytes: int
    refuse: Callable[[], http.Response]  # the answer once the body passes max_bytes


def limit(flow: http.HTTPFlow, max_bytes: int, refuse: Callable[[], http.Response]) -> None:
    """Refuse this flow's request body, with `refuse()`, as soon as more than `max_bytes` arrive."""
    setattr(flow, _LIMIT, BodyLimit(max_bytes, refuse))


def _limit_of(flow: http.HTTPFlow | None) -> BodyLimit | None:
    return getattr(flow, _LIMIT, None)


_Base: type = getattr(http_layers.HttpStream, "_mcpgw_base", http_layers.HttpStream)  # the original after a reload


class GatewayHttpStream(_Base):  # type: ignore[misc, valid-type]
    _mcpgw_base = _Base
    _received = 0  # request body bytes that arrived, queued or not
    _over_limit = False
    _answered = False  # answered before the body was read: whatever arrives now is discarded
    _answered_at = 0  # _received then
    _linger: commands.RequestWakeup | None = None  # set once the answer is out

    def handle_event(self, event: events.Event):
        # Every event passes here first, also while a hook runs and mitmproxy would queue it. A
        # plain method that hands back mitmproxy's own generator, except for the two kinds of event
        # it must look at first: no generator of ours to resume on every event of every stream.
        if isinstance(event, (RequestData, events.Wakeup)):
            return self._screen(event)
        return super().handle_event(event)

    def _screen(self, event: events.Event):
        if isinstance(event, RequestData):
            self._received += len(event.data)
            if self._answered or self._over_limit:
                if self._linger is not None and self._lingered_enough():
                    yield from self._stop_reading("the client kept sending a request body already answered")
                return  # never queued, never buffered
            found = _limit_of(getattr(self, "flow", None))
            if found is not None and self._received > found.max_bytes and self._reading_whole():
                self._over_limit = True
                self.request_body_buf.clear()
                if self._paused:  # decided when the hook returns (see state_wait_for_request_headers)
                    return
        elif isinstance(event, events.Wakeup) and event.command is self._linger:
            if self.client_state == self._state_discard_request_body:
                yield from self._stop_reading(f"the request body was not complete {LINGER_SECONDS:g}s after the answer")
            return
        yield from super().handle_event(event)

    @expect(http_layers.RequestHeaders)
    def state_wait_for_request_headers(self, event):
        yield from super().state_wait_for_request_headers(event)
        if self.flow.error:
            return  # refused by mitmproxy itself, or killed
        if self.client_state != self.state_consume_request_body:  # CONNECT, or a body being streamed
            if self._over_limit and self.client_state == self.state_stream_request_body:
                yield from self._stop_reading("a request body with a limit was streamed past it")  # (by another addon)
            return
        if self._over_limit:
            if self.flow.response is None:  # (a refusal decided at headers stays the answer)
                self.flow.response = _limit_of(self.flow).refuse()
        elif self.flow.response is None or self._body_complete():
            return  # forwarded after its body; or a small body already here: mitmproxy answers as usual
        yield from self._answer_now()

    @expect(RequestData, RequestTrailers, RequestEndOfMessage)
    def state_consume_request_body(self, event):
        if self._over_limit:  # set by handle_event for this very chunk
            self.flow.response = _limit_of(self.flow).refuse()
            yield from self._answer_now()
            return
        yield from super().state_consume_request_body(event)

    def _reading_whole(self) -> bool:
        """The body is being read to be held whole (mitmproxy's default), where the limit applies."""
        return self.client_state in (self.state_wait_for_request_headers, self.state_consume_request_body)

    def _body_complete(self) -> bool:
        return any(isinstance(e, RequestEndOfMessage) for e in self._paused_event_queue)

    def _answer_now(self):
        """Send flow.response now, as mitmproxy sends an addon's answer after the request hook,
        and discard the body from here on."""
        self._answered, self._answered_at = True, self._received
        self.request_body_buf.clear()
        self.client_state = self._state_discard_request_body
        response = self.flow.response
        if not (self.flow.request.is_http2 or self.flow.request.is_http3):
            response.headers["Connection"] = "close"  # the rest of the body is never read
        response.timestamp_start = time.time()
        yield HttpResponseHeadersHook(self.flow)
        if (yield from self.check_killed(True)):
            return
        yield from self.send_response()  # the response hook, then the answer to the client
        if self.client_state != self._state_discard_request_body:
            return  # killed in the response hook
        yield SendHttp(ResponseEndOfMessage(self.stream_id), self.context.client)
        self.flow.live = False
        if self._lingered_enough():
            yield from self._stop_reading("the client kept sending a request body already answered")
            return
        self._linger = commands.RequestWakeup(LINGER_SECONDS)
        yield self._linger

    def _lingered_enough(self) -> bool:
        return self._received - self._answered_at > LINGER_BYTES

    @expect(RequestData, RequestTrailers, RequestEndOfMessage)
    def _state_discard_request_body(self, event):
        if isinstance(event, RequestEndOfMessage):
            self.flow.request.timestamp_end = time.time()
            self.client_state = self.state_done
            yield DropStream(self.stream_id)  # HTTP/1 closes the connection itself (Connection: close)

    def _stop_reading(self, why: str):
        if self.client_state == self.state_errored:
            return
        self.client_state = self.state_errored
        log.info("%s %r: %s; stopped reading it", self.flow.request.method, self.flow.request.path.partition("?")[0], why)
        if self.flow.request.is_http2 or self.flow.request.is_http3:
            yield SendHttp(ResponseProtocolError(self.stream_id, why, ErrorCode.CANCEL), self.context.client)
        else:
            yield commands.CloseConnection(self.context.client)
        yield DropStream(self.stream_id)


def install() -> Callable[[], None]:
    """Make mitmproxy run every new HTTP request stream as a GatewayHttpStream; returns the undo."""
    missing = [name for name in _NEEDED if not callable(getattr(_Base, name, None))]
    if missing or not version.VERSION.startswith("12."):  # written against mitmproxy 12's internals
        log.error("mitmproxy %s%s: request bodies are read whole before the gateway's answer and its body limit",
                  version.VERSION, f" (its HttpStream lacks {', '.join(missing)})" if missing else " is not 12.x")
        return lambda: None
    http_layers.HttpStream = GatewayHttpStream

    def uninstall() -> None:
        if http_layers.HttpStream is GatewayHttpStream:
            http_layers.HttpStream = _Base

    return uninstall
