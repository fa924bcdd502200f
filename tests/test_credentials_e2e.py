"""Credential mediation end to end: a real mitmdump running the gateway in front of the demo
upstream, the test authorization server (introspection), and a bystander server on another
origin that records whatever reaches it.

- token swap: the client's IdP token is introspected, then replaced by the stored credential;
- passthrough: the client's own upstream token goes through, the gateway's key does not;
- rotation: the env file and a secret file change while ten clients call in a loop;
- confused deputy: redirects, client-chosen hosts and intercept mode never carry the credential
  anywhere but the route's upstream;
- and everything the gateway wrote (log at debug level with headers, saved flows, audit log)
  holds none of the secrets used here."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.support.authserver import running_auth_server
from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, http_client, jsonrpc, mcp_session
from tests.support.threaded_server import ThreadedServer

pytestmark = pytest.mark.e2e

KONNECT_TOKEN = "konnect-sat-5f0c2b7e9a"
ADMIN_TOKEN = "konnect-admin-sat-71d3aa"
ROTATING = ("rotating-token-old-1a2b", "rotating-token-new-3c4d")
UPSTREAM_KEY = ("upstream-key-old-5e6f", "upstream-key-new-7a8b")
DEV_KEY, ADMIN_KEY = "dev-api-key-93kd", "admin-api-key-41jx"
GITHUB_USER_TOKEN = "ghu_userOwnGithubToken0042"
INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}
REFRESH = 0.5


class Bystander:
    """An origin that is not any route's upstream; records every request that reaches it."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []

        async def record(request: Request) -> PlainTextResponse:
            self.requests.append(dict(request.headers))
            return PlainTextResponse("bystander")

        methods = ["GET", "POST", "PUT", "DELETE"]
        self.server = ThreadedServer(Starlette(routes=[Route("/{path:path}", record, methods=methods)]))

    @property
    def url(self) -> str:
        return self.server.base_url


@pytest.fixture(scope="module")
def auth():
    with running_auth_server(token_format="opaque") as server:
        yield server


@pytest.fixture(scope="module")
def bystander():
    b = Bystander()
    b.server.start()
    yield b
    b.server.stop()


def write_secrets(workdir: Path, version: int) -> None:
    """Rotate like a deployment tool would: write aside, then rename over the old file."""
    for name, text in (("secrets.env", f"KONNECT_MCP_TOKEN={KONNECT_TOKEN}\nROTATING_TOKEN={ROTATING[version]}\n"
                                        f"DEV_API_KEY={DEV_KEY}\n"),
                       ("upstream-key", UPSTREAM_KEY[version] + "\n")):
        tmp = workdir / (name + ".tmp")
        tmp.write_text(text)
        tmp.replace(workdir / name)


@pytest.fixture(scope="module")
def gateway(workdir, upstream, auth, bystander):
    write_secrets(workdir, 0)
    (workdir / "admin-token").write_text(ADMIN_TOKEN + "\n")
    client_id, client_secret = auth.introspection_client
    key_auth = {"hide_credentials": True}
    swap = {"mode": "inject", "add": {"headers": ["Authorization:Bearer {env://KONNECT_MCP_TOKEN}"]}}
    policy = {
        "gateway": {"env_file": "secrets.env", "secret_refresh": REFRESH},
        "consumer_groups": ["admin", "developer"],
        "consumers": {
            "dev-user": {"groups": ["developer"], "keys": ["{env://DEV_API_KEY}"]},
            "admin-user": {"groups": ["admin"], "keys": [ADMIN_KEY]},
            "guest": {},
        },
        "services": {
            "konnect": {"url": upstream.url},
            "github": {"url": upstream.url},
            "redirector": {"url": upstream.base + "/_test"},
        },
        "routes": {
            # First: intercept mode governs the upstream's URL with the first route naming it.
            "rotating-mcp": {
                "service": "konnect", "paths": ["/rotating-mcp"], "key_auth": {},  # the key stays, but is swapped
                "credentials": {"mode": "inject", "add": {"headers": [
                    "Authorization:Bearer {env://ROTATING_TOKEN}", "apikey:{file://upstream-key}"]}},
            },
            "konnect-mcp": {  # the recipe's token swap
                "service": "konnect", "paths": ["/konnect-mcp"], "upstream_identity_headers": True,
                "oauth": {"authorization_servers": [auth.url], "introspection_endpoint": auth.introspection_url,
                          "client_id": client_id, "client_secret": "{env://INTROSPECTION_SECRET}",
                          "consumer_claim": ["sub"], "consumer_groups_claim": ["groups"],
                          "passthrough_credentials": False},
                "credentials": {**swap, "overrides": [
                    {"groups": ["admin"], "add": {"headers": {"Authorization": "Bearer {file://admin-token}"}}}]},
            },
            "github-mcp": {"service": "github", "paths": ["/github-mcp"], "key_auth": key_auth},  # passthrough
            "guest-fallback": {"service": "konnect", "paths": ["/guest-mcp"],
                               "key_auth": {**key_auth, "anonymous": "guest"}, "credentials": swap},
            "redirecting": {"service": "redirector", "paths": ["/redirecting"], "key_auth": key_auth,
                            "credentials": swap},
        },
    }
    gw = Gateway(workdir, policy, env={"INTROSPECTION_SECRET": client_secret}, extra=[
        "--set", "termlog_verbosity=debug", "--set", "flow_detail=2",
        "--set", f"save_stream_file={workdir / 'flows.mitm'}", "--set", f"mcp_audit={workdir / 'audit.jsonl'}"])
    gw.secrets = [KONNECT_TOKEN, ADMIN_TOKEN, *ROTATING, *UPSTREAM_KEY, DEV_KEY, ADMIN_KEY, GITHUB_USER_TOKEN,
                  client_secret]
    yield gw
    gw.stop()


def sent_to(upstream: DemoUpstream, path: str = "/mcp") -> list[dict]:
    return [r["headers"] for r in upstream.requests() if r["path"] == path]


# -- the two patterns of the recipe ----------------------------------------------------------


async def test_token_swap_sends_exactly_the_stored_credential(gateway, upstream, auth):
    upstream.reset()
    route = gateway.url("/konnect-mcp")
    user_token = auth.mint_opaque("dev-user", aud=route)
    gateway.secrets.append(user_token)
    async with mcp_session(route, headers={"Authorization": f"Bearer {user_token}"}) as session:
        tools = await session.list_tools()
        result = await session.call_tool("search_repositories", {"query": "kong"})
    assert tools.tools and not result.isError
    received = sent_to(upstream)
    assert len(received) >= 3
    for headers in received:
        assert headers["authorization"] == f"Bearer {KONNECT_TOKEN}"  # exactly one, exactly the stored one
        assert "apikey" not in headers
        assert headers["x-consumer-username"] == "dev-user"  # the upstream still learns who called
    assert f"consumer dev-user" in gateway.log()


async def test_admins_use_their_own_service_account(gateway, upstream, auth):
    upstream.reset()
    route = gateway.url("/konnect-mcp")
    admin_token = auth.mint_opaque("admin-user", aud=route)
    gateway.secrets.append(admin_token)
    async with http_client() as client:
        response = await client.post(route, json=jsonrpc("initialize", INIT),
                                     headers={**MCP_HEADERS, "Authorization": f"Bearer {admin_token}"})
    assert response.status_code == 200
    assert [h["authorization"] for h in sent_to(upstream)] == [f"Bearer {ADMIN_TOKEN}"]


async def test_passthrough_sends_the_users_token_and_no_gateway_key(gateway, upstream):
    upstream.reset()
    headers = {"apikey": DEV_KEY, "Authorization": f"Bearer {GITHUB_USER_TOKEN}"}
    async with mcp_session(gateway.url("/github-mcp"), headers=headers) as session:
        await session.list_tools()
    received = sent_to(upstream)
    assert received and all(h["authorization"] == f"Bearer {GITHUB_USER_TOKEN}" and "apikey" not in h
                            for h in received)


async def test_anonymous_callers_never_get_the_stored_credential(gateway, upstream):
    upstream.reset()
    async with http_client() as client:
        anonymous = await client.post(gateway.url("/guest-mcp"), json=jsonrpc("initialize", INIT),
                                      headers=MCP_HEADERS)  # key-auth lets it on as the anonymous consumer
        known = await client.post(gateway.url("/guest-mcp"), json=jsonrpc("initialize", INIT),
                                  headers={**MCP_HEADERS, "apikey": DEV_KEY})
    assert anonymous.status_code == 403 and KONNECT_TOKEN not in anonymous.text
    assert known.status_code == 200
    assert [h["authorization"] for h in sent_to(upstream)] == [f"Bearer {KONNECT_TOKEN}"]


# -- confused deputy -----------------------------------------------------------------------------


async def test_a_redirect_to_another_host_never_carries_the_stored_credential(gateway, bystander):
    bystander.requests.clear()
    target = f"{bystander.url}/landing"
    async with http_client(follow_redirects=True) as client:
        response = await client.get(gateway.url(f"/redirecting/redirect?to={target}"),
                                    headers={"apikey": DEV_KEY})
    # The gateway passed the 302 on; the client followed it itself, with what it had: no stored credential.
    assert [r.status_code for r in response.history] == [302] and response.text == "bystander"
    assert KONNECT_TOKEN not in str(response.history[0].headers) + response.history[0].text
    assert len(bystander.requests) == 1
    assert KONNECT_TOKEN not in str(bystander.requests[0])
    # The upstream that redirected did get it: the credential is bound to its origin, not to the client.
    assert "route redirecting: stored credential (route operations) sent for consumer dev-user" in gateway.log()


def raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def test_client_chosen_hosts_never_receive_the_stored_credential(gateway, upstream, bystander):
    bystander.requests.clear()
    other = bystander.url.removeprefix("http://")
    body = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18",' \
           b'"capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}'

    def request(host: str) -> bytes:
        # An absolute-form target, forwarding headers and the Host, all naming the bystander.
        return (f"POST http://{other}/rotating-mcp HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-Host: {other}\r\n"
                f"Forwarded: host={other}\r\nX-Original-URL: http://{other}/\r\napikey: {DEV_KEY}\r\n"
                "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body

    sent_upstream = re.escape(f"POST {upstream.url}")  # flow_detail output: where each flow went
    for host in (f"127.0.0.1:{gateway.port}", other):  # the bystander's port on a loopback name is accepted
        before = len(re.findall(sent_upstream, gateway.log()))
        assert b"bystander" not in raw_request(gateway.port, request(host))
        gateway.process.wait_for(sent_upstream, count=before + 1, timeout=10)
    # A Host naming another server is refused outright (DNS-rebinding protection).
    assert raw_request(gateway.port, request("evil.example")).startswith(b"HTTP/1.1 403")
    assert bystander.requests == []


async def test_intercept_mode_injects_only_for_the_routes_origin(gateway, upstream, bystander):
    upstream.reset()
    bystander.requests.clear()
    async with http_client(gateway, intercept=True) as client:
        governed = await client.post(upstream.url, json=jsonrpc("initialize", INIT),
                                     headers={**MCP_HEADERS, "apikey": DEV_KEY})
        elsewhere = await client.get(f"{bystander.url}/mcp", headers={"X-Marker": "not-governed"})
    assert governed.status_code == 200 and elsewhere.text == "bystander"
    assert sent_to(upstream)[-1]["authorization"].startswith("Bearer rotating-token-")  # the rotating route
    assert bystander.requests[-1]["x-marker"] == "not-governed"
    assert not any(secret in str(bystander.requests) for secret in gateway.secrets)


# -- rotation --------------------------------------------------------------------------------


async def test_rotation_under_load_sends_old_or_new_never_anything_else(gateway, upstream, workdir):
    upstream.reset()
    versions_before = gateway.log().count("policy version")
    stop, reloaded = asyncio.Event(), asyncio.Event()

    async def client_loop() -> int:
        sent = 0
        async with http_client() as client:
            while not stop.is_set():
                # marked when sent after the gateway said it loaded the new version: by then, the new values
                marked = {"x-test-mark": "after-reload"} if reloaded.is_set() else {}
                response = await client.post(gateway.url("/rotating-mcp"), json=jsonrpc("initialize", INIT),
                                             headers={**MCP_HEADERS, "apikey": DEV_KEY, **marked})
                assert response.status_code == 200, response.text
                sent += 1
        return sent

    async def rotate() -> None:
        await asyncio.sleep(1.0)
        write_secrets(workdir, 1)
        deadline = time.monotonic() + 20
        while gateway.log().count("policy version") == versions_before and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        reloaded.set()
        await asyncio.sleep(1.0)
        stop.set()

    counts = await asyncio.gather(*(client_loop() for _ in range(10)), rotate())
    assert sum(counts[:10]) >= 50
    received = [r for r in upstream.requests() if r["path"] == "/mcp"]
    assert len(received) == sum(counts[:10])
    old = (f"Bearer {ROTATING[0]}", UPSTREAM_KEY[0])
    new = (f"Bearer {ROTATING[1]}", UPSTREAM_KEY[1])
    for r in received:
        assert r["headers"]["authorization"] in (old[0], new[0])
        assert r["headers"]["apikey"] in (old[1], new[1])  # the stored key, never the client's
    # Everything sent once the gateway has loaded the change carries the new values.
    late = [r for r in received if r["headers"].get("x-test-mark") == "after-reload"]
    assert late and all((r["headers"]["authorization"], r["headers"]["apikey"]) == new for r in late)
    assert any((r["headers"]["authorization"], r["headers"]["apikey"]) == old for r in received)
    # secret_refresh re-resolved every REFRESH seconds, but only the real change made new versions.
    assert gateway.log().count("policy version") - versions_before <= 2


# -- nothing written holds a secret ------------------------------------------------------------


def test_nothing_the_gateway_wrote_holds_a_secret(gateway, workdir):
    gateway.stop()  # flush and close the saved flows and the audit log
    written = {"log": gateway.process.log_path.read_bytes()}
    for name in ("flows.mitm", "audit.jsonl"):
        path = workdir / name
        assert path.exists() and path.stat().st_size > 0, name
        written[name] = path.read_bytes()
    assert b"consumer dev-user" in written["log"]
    for secret in gateway.secrets:
        for name, content in written.items():
            assert secret.encode() not in content, f"a secret appears in {name}"
