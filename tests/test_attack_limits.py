"""Resource limits, attacked: request bodies sent to exhaust the gateway's memory or to keep it
reading (issue 11 item 4). Later attacks on resource limits belong here too.

A real mitmdump with the gateway addon in front of the demo upstream. The attacker uses raw
sockets, to decide exactly what is sent and when and to read the answer while still sending.
The gateway's memory is read from /proc: VmHWM is the peak resident set, so a buffer that was
held and freed again before the check still counts."""

from __future__ import annotations

import json
import select
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, jsonrpc, mcp_session
from tests.support.threaded_server import ThreadedServer

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
UPLOAD = 250 * MiB  # what each attacker offers to send
LIMIT = 1 * MiB  # gateway.max_body_size (the default)
MEMORY_BUDGET = 50 * MiB  # how much the gateway's peak memory may grow under the attack
ANSWERED_EARLY = 32 * MiB  # "before the body": at most what socket buffers hold, far below UPLOAD
KEY = "dev-api-key"
IDP_DELAY = 2.0  # how long the slow identity provider takes to answer an introspection
INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("attack-limits")


@pytest.fixture(scope="module")
def upstream(workdir) -> Iterator[DemoUpstream]:
    up = DemoUpstream(workdir, "--json-response")
    yield up
    up.stop()


@pytest.fixture(scope="module")
def slow_idp() -> Iterator[str]:
    """An introspection endpoint that takes IDP_DELAY seconds to call every token inactive."""
    async def introspect(request: Request) -> JSONResponse:
        await asyncio.sleep(IDP_DELAY)
        return JSONResponse({"active": False})

    server = ThreadedServer(Starlette(routes=[Route("/introspect", introspect, methods=["POST"])]))
    server.start()
    yield server.base_url
    server.stop()


@pytest.fixture(scope="module")
def gateway(workdir, upstream, slow_idp) -> Iterator[Gateway]:
    gw = Gateway(workdir, {
        "consumers": {"dev-user": {"keys": [KEY]}},
        "services": {"github": {"url": upstream.url}},
        "routes": {"github-mcp": {"service": "github", "paths": ["/github-mcp"],
                                  "key_auth": {"key_names": ["apikey"], "hide_credentials": True}},
                   "slow-idp-mcp": {"service": "github", "paths": ["/slow-idp-mcp"], "oauth": {
                       "authorization_servers": [slow_idp], "introspection_endpoint": f"{slow_idp}/introspect",
                       "client_id": "gateway", "client_secret": "gateway-client-secret", "cache_introspection": False}}},
    }, intercept=False)
    with httpx.Client(timeout=10) as client:  # warm up: the baseline is a gateway that has served a call
        assert client.post(gw.url("/github-mcp"), json=jsonrpc("initialize", INIT),
                           headers={**MCP_HEADERS, "apikey": KEY}).status_code == 200
    yield gw
    gw.stop()


def peak_memory(gateway: Gateway) -> int:
    """The gateway process's peak resident set size (VmHWM), in bytes."""
    with open(f"/proc/{gateway.process.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


@dataclass
class Upload:
    status: int | None  # of the answer, None if none came
    body: bytes
    sent_before_answer: int | None  # body bytes sent when the first byte of the answer arrived
    sent: int  # body bytes sent in all
    ended: str  # why the attacker stopped: "answered and closed", "reset", "sent all", "deadline"


def head(method: str, headers: dict[str, str], path: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def attack(port: int, headers: dict[str, str], *, total: int = UPLOAD, chunked: bool = True,
           send_body: bool = True, deadline: float = 20, path: str = "/github-mcp") -> Upload:
    """POST a `total`-byte body as fast as the gateway takes it, reading the answer meanwhile, and
    keep sending after the answer, as an attacker would, until the gateway stops reading."""
    if chunked:
        headers = {**headers, "Transfer-Encoding": "chunked"}
        piece = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"  # 64 KiB chunks
    else:
        headers = {"Content-Length": str(total), **headers}
        piece = b"x" * 0x10000
    sock = socket.create_connection(("127.0.0.1", port), timeout=deadline)
    sock.sendall(head("POST", headers, path))
    sock.setblocking(False)
    answer, sent, sent_before_answer, ended = b"", 0, None, "deadline"
    stop = time.monotonic() + deadline
    try:
        while time.monotonic() < stop:
            writing = send_body and sent < total
            readable, writable, _ = select.select([sock], [sock] if writing else [], [], 0.5)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionError:
                    ended = "reset"
                    break
                if not data:
                    ended = "answered and closed" if answer else "closed unanswered"
                    break
                if sent_before_answer is None:
                    sent_before_answer = sent
                answer += data
                if not send_body and _complete(answer):
                    ended = "answered"
                    break
            if writable:
                try:
                    sent += sock.send(piece)
                except BlockingIOError:
                    pass
                except (ConnectionError, BrokenPipeError):
                    ended = "reset"
                    break
            elif send_body and sent >= total and not readable and _complete(answer):
                ended = "sent all"
                break
    finally:
        sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    return Upload(status, answer.partition(b"\r\n\r\n")[2], sent_before_answer, sent, ended)


def _complete(answer: bytes) -> bool:
    head_part, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head_part.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def concurrently(n: int, run) -> list[Upload]:
    results: list[Upload | BaseException] = [None] * n  # type: ignore[list-item]

    def one(i: int) -> None:
        try:
            results[i] = run()
        except BaseException as e:  # noqa: BLE001 - reported below
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results  # type: ignore[return-value]


def assert_refused_unread(upload: Upload, status: int, message: str) -> None:
    """Answered with a JSON refusal while most of the body was still to come, and the gateway
    stopped reading instead of taking all of it."""
    assert upload.status == status, upload
    assert json.loads(upload.body) == {"message": message}
    assert upload.sent_before_answer is not None and upload.sent_before_answer < ANSWERED_EARLY, upload
    assert upload.ended in ("answered and closed", "reset") and upload.sent < UPLOAD // 4, upload


def assert_still_serving(gateway: Gateway) -> None:
    with httpx.Client(timeout=10) as client:
        r = client.post(gateway.url("/github-mcp"), json=jsonrpc("initialize", INIT), headers={**MCP_HEADERS, "apikey": KEY})
    assert r.status_code == 200 and r.json()["result"]["serverInfo"]


# -- attacks ---------------------------------------------------------------------------------------


def test_attack_concurrent_unauthenticated_chunked_uploads(gateway):
    """Three 250 MB chunked POSTs without a key at once: each is answered 401 at its headers, none
    is read, and the gateway's peak memory barely moves."""
    before = peak_memory(gateway)
    uploads = concurrently(3, lambda: attack(gateway.port, {}))
    for upload in uploads:
        assert_refused_unread(upload, 401, "No API key found in request")
    assert peak_memory(gateway) - before < MEMORY_BUDGET
    assert "No API key found" in gateway.log()
    assert_still_serving(gateway)


def test_attack_concurrent_authenticated_uploads_over_the_limit(gateway):
    """With a valid key, three 250 MB bodies (chunked, so no length to refuse them by): each is
    refused 413 once it passes the limit, while it arrives, never buffered whole."""
    before = peak_memory(gateway)
    uploads = concurrently(3, lambda: attack(gateway.port, {"apikey": KEY}))
    for upload in uploads:
        assert_refused_unread(upload, 413, f"Request body is larger than {LIMIT} bytes")
    assert peak_memory(gateway) - before < MEMORY_BUDGET
    assert_still_serving(gateway)


def test_attack_body_longer_than_the_limit_with_an_honest_length(gateway):
    """A 250 MB body that says so (Content-Length), with and without a key: 413 at once."""
    before = peak_memory(gateway)
    for headers in ({}, {"apikey": KEY}):
        upload = attack(gateway.port, headers, chunked=False)
        assert_refused_unread(upload, 413, f"Request body is larger than {LIMIT} bytes")
    assert peak_memory(gateway) - before < MEMORY_BUDGET


def test_attack_uploads_while_the_identity_provider_is_slow(gateway):
    """Bearer tokens for a route whose introspection takes seconds, and 250 MB bodies sent as fast
    as possible meanwhile: what arrives while the gateway waits is never held past the limit."""
    before = peak_memory(gateway)
    started = time.monotonic()
    uploads = concurrently(3, lambda: attack(gateway.port, {"Authorization": "Bearer some-opaque-token"},
                                             path="/slow-idp-mcp"))
    for upload in uploads:
        assert upload.status == 401 and json.loads(upload.body)["error"] == "unauthorized", upload
        assert upload.sent_before_answer is not None and upload.ended != "deadline", upload
    assert time.monotonic() - started >= IDP_DELAY  # the uploads did run while introspection waited
    assert peak_memory(gateway) - before < MEMORY_BUDGET


@pytest.mark.parametrize("headers", [{}, {"apikey": KEY}], ids=["no key", "key"])
def test_attack_huge_declared_length_is_answered_before_the_body_is_sent(gateway, headers):
    """`Content-Length: 209715200` and then nothing: the 413 comes without waiting for the body."""
    upload = attack(gateway.port, headers, total=200 * MiB, chunked=False, send_body=False, deadline=5)
    assert upload.ended == "answered" and upload.status == 413 and upload.sent == 0, upload
    assert json.loads(upload.body) == {"message": f"Request body is larger than {LIMIT} bytes"}


@pytest.mark.parametrize("expect", [False, True], ids=["plain", "expect-100-continue"])
def test_attack_unauthenticated_request_is_answered_at_its_headers(gateway, expect):
    """A body within the limit, declared and never sent, without a key: the 401 needs no body
    (and no `100 Continue` invites one)."""
    headers = {"Expect": "100-continue"} if expect else {}
    upload = attack(gateway.port, headers, total=LIMIT // 2, chunked=False, send_body=False, deadline=5)
    assert upload.ended == "answered" and upload.status == 401, upload
    assert json.loads(upload.body) == {"message": "No API key found in request"}


@pytest.mark.parametrize("headers, status", [({}, 401), ({"apikey": KEY}, 413)], ids=["no key", "key"])
def test_attack_http2_uploads_are_refused_unread(gateway, headers, status):
    """The same over HTTP/2 (TLS on the gateway listener, curl streaming 250 MB from a pipe)."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl not installed")
    before = peak_memory(gateway)
    cmd = [curl, "-sS", "--http2", "--cacert", str(gateway.ca_cert), "-X", "POST", "-T", "-",
           "-H", "Content-Type: application/json", *[a for k, v in headers.items() for a in ("-H", f"{k}: {v}")],
           "-w", "\n%{http_version} %{http_code} %{size_upload}", f"https://127.0.0.1:{gateway.port}/github-mcp"]
    source = subprocess.Popen(["head", "-c", str(UPLOAD), "/dev/zero"], stdout=subprocess.PIPE)
    try:
        out = subprocess.run(cmd, stdin=source.stdout, capture_output=True, text=True, timeout=30).stdout
    finally:
        source.kill()
        source.wait()
    body, _, summary = out.rpartition("\n")
    version, code, uploaded = summary.split()
    assert (version, int(code)) == ("2", status), out
    assert "message" in json.loads(body)
    assert float(uploaded) < ANSWERED_EARLY
    assert peak_memory(gateway) - before < MEMORY_BUDGET


# -- what a legitimate client still gets -----------------------------------------------------------


def padded_initialize(size: int) -> bytes:
    """An initialize request of exactly `size` bytes (the padding is a client info field)."""
    message = jsonrpc("initialize", {**INIT, "clientInfo": {"name": "t", "version": "1", "pad": ""}})
    bare = len(json.dumps(message).encode())
    message["params"]["clientInfo"]["pad"] = "x" * (size - bare)
    body = json.dumps(message).encode()
    assert len(body) == size
    return body


def test_bodies_up_to_the_limit_reach_the_upstream(gateway, upstream):
    """A body of exactly the limit, with a length or chunked, on one kept-alive connection."""
    body = padded_initialize(LIMIT)
    upstream.reset()
    with httpx.Client(timeout=20) as client:
        headers = {**MCP_HEADERS, "apikey": KEY}
        sized = client.post(gateway.url("/github-mcp"), content=body, headers=headers)
        chunked = client.post(gateway.url("/github-mcp"), content=iter([body[:1000], body[1000:]]), headers=headers)
        refused = client.post(gateway.url("/github-mcp"), content=iter([body, b" "]), headers=headers)
    for r in (sized, chunked):
        assert r.status_code == 200 and r.json()["result"]["serverInfo"], r.text
    assert refused.status_code == 413  # one byte more, even when it comes last
    assert [r["body_bytes"] for r in upstream.requests() if r["rpc_method"] == "initialize"] == [LIMIT, LIMIT]


def test_expect_100_continue_with_a_key_still_gets_its_continue(gateway):
    body = padded_initialize(4096)
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    try:
        sock.sendall(head("POST", {"Accept": "application/json, text/event-stream", "apikey": KEY,
                                   "Expect": "100-continue", "Content-Length": str(len(body))}, "/github-mcp"))
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        answer = b""
        while not _complete(answer):
            answer += sock.recv(65536)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 200")


async def test_official_client_session_and_its_refusals(gateway):
    async with mcp_session(gateway.url("/github-mcp"), headers={"apikey": KEY}) as session:
        assert len((await session.list_tools()).tools) >= 75
    async with httpx.AsyncClient(timeout=10) as client:  # a small refused request keeps a clean answer
        r = await client.post(gateway.url("/github-mcp"), json=jsonrpc("tools/list"), headers=MCP_HEADERS)
    assert r.status_code == 401 and r.json() == {"message": "No API key found in request"}
