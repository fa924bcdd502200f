"""Attacks on correlation and sessions, tried as an attacker would against a running gateway: a
developer (key-auth, the recipe's ACL) who wants to see the admin-only tools or read what an
admin's session returned. Raw httpx is the attacker's client; a real mitmdump runs the gateway
in front of the real demo upstream (Streamable HTTP with resumable streams, and legacy HTTP+SSE).

What must hold: every list answer on a governed route is filtered for whoever receives it, however
the client arranged ids, sessions and stream resumption; a session belongs to the caller that
opened it, and anyone else presenting its id is told it does not exist (404) without the
upstream seeing the request. Extend this module with each new way of trying."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import types

from scripts.demo_github_tools import READ_TOOLS, WRITE_TOOLS
from tests.support.gateway import DemoUpstream, Gateway, http_client, jsonrpc

pytestmark = pytest.mark.e2e

DEV = {"apikey": "dev-api-key"}
ADMIN = {"apikey": "admin-api-key"}
PROTOCOL = types.LATEST_PROTOCOL_VERSION  # 2025-11-25: the upstream sends priming events, so streams resume
STREAMABLE = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
              "MCP-Protocol-Version": PROTOCOL}
LEGACY_POST = {"Accept": "*/*", "Content-Type": "application/json"}
ADMIN_ONLY = {"push_files", "delete_repository", "create_repository", "merge_pull_request"}
READ_FILE = jsonrpc("tools/call", {"name": "get_file_contents",
                                   "arguments": {"owner": "octocat", "repo": "hello-world", "path": "README.md"}}, id=2)
RECIPE_ACL = {
    "consumer_identifier": "username",
    "include_consumer_groups": True,
    "default_acl": [{"deny": ["developer"], "scope": "tools"}],
    "tools": [*({"name": t, "acl": {"allow": ["admin", "developer"]}} for t in READ_TOOLS),
              *({"name": t, "acl": {"allow": ["admin"]}} for t in WRITE_TOOLS)],
}
FILE_MARK = "hello-world/blob/main/README.md"  # in the get_file_contents result, and only there
KEY_AUTH = {"key_names": ["apikey"], "hide_credentials": True}


def policy(up: DemoUpstream, **gateway: Any) -> dict:
    governed = {"key_auth": KEY_AUTH, "acl": RECIPE_ACL}
    return {
        **({"gateway": gateway} if gateway else {}),
        "consumer_groups": ["admin", "developer"],
        "consumers": {"admin-user": {"groups": ["admin"], "keys": ["admin-api-key"]},
                      "dev-user": {"groups": ["developer"], "keys": ["dev-api-key"]}},
        "services": {"gh": {"url": up.url}, "gh-root": {"url": up.base}},
        "routes": {
            "github-mcp": {"service": "gh", "paths": ["/github-mcp"], **governed},  # Streamable HTTP
            "github-root": {"service": "gh-root", "paths": ["/gh"], **governed},  # /gh/sse legacy, /gh/mcp too
            "open": {"service": "gh", "paths": ["/open"]},  # no authentication at all
        },
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("attack-sessions")


@pytest.fixture(scope="module")
def upstream(workdir) -> AsyncIterator[DemoUpstream]:
    up = DemoUpstream(workdir)
    yield up
    up.stop()


@pytest.fixture(scope="module")
def gateway(workdir, upstream) -> AsyncIterator[Gateway]:
    gw = Gateway(workdir, policy(upstream))
    yield gw
    gw.stop()


# --- the attacker's toolkit -------------------------------------------------------------------

def sse_events(text: str) -> list[dict[str, Any]]:
    """Events of an SSE body: {"event", "id", "data"} (data None when the block has none)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event: dict[str, Any] = {"event": None, "id": None, "data": None}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                event["data"] = value if event["data"] is None else event["data"] + "\n" + value
            elif name in ("id", "event"):
                event[name] = value
        if any(v is not None for v in event.values()):
            events.append(event)
    return events


def messages(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(e["data"]) for e in events if e["data"]]


async def read_until(response: httpx.Response, done: Callable[[list[dict[str, Any]]], bool],
                     timeout: float = 15) -> list[dict[str, Any]]:
    """Read an open SSE response until `done(events so far)`."""
    buffer = ""
    async with asyncio.timeout(timeout):
        async for chunk in response.aiter_text():
            buffer += chunk.replace("\r\n", "\n")
            complete = buffer.rpartition("\n\n")[0]
            if complete and done(sse_events(complete)):
                return sse_events(complete)
    return sse_events(buffer)


def answer_to(message_id: Any) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: any(m.get("id") == message_id and "method" not in m for m in messages(events))


def tools_in(events: list[dict[str, Any]]) -> set[str]:
    """Every tool name any answer in `events` showed."""
    return {t["name"] for m in messages(events) for t in (m.get("result") or {}).get("tools", [])}


async def initialize(client: httpx.AsyncClient, url: str, key: dict[str, str]) -> str:
    """Open a Streamable HTTP session as `key`; its Mcp-Session-Id."""
    init = jsonrpc("initialize", {"protocolVersion": PROTOCOL, "capabilities": {},
                                  "clientInfo": {"name": "attacker", "version": "0"}}, id=1)
    r = await client.post(url, json=init, headers={**STREAMABLE, **key})
    assert r.status_code == 200, r.text
    session = r.headers["mcp-session-id"]
    r = await client.post(url, json=jsonrpc("notifications/initialized", id=None),
                          headers={**STREAMABLE, **key, "Mcp-Session-Id": session})
    assert r.status_code == 202, r.text
    return session


async def post_events(client: httpx.AsyncClient, url: str, message: dict, headers: dict[str, str]) -> list[dict]:
    r = await client.post(url, json=message, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), (r.status_code, r.text)
    return sse_events(r.text)


@contextlib.asynccontextmanager
async def legacy_stream(client: httpx.AsyncClient, url: str, headers: dict[str, str]):
    """A legacy HTTP+SSE GET stream, initialized: (the response to read from, its POST endpoint)."""
    async with client.stream("GET", url, headers={"Accept": "text/event-stream", **headers}) as stream:
        assert stream.status_code == 200, await stream.aread()
        lines = stream.aiter_lines()
        endpoint = None
        async with asyncio.timeout(10):
            async for line in lines:
                if line.startswith("data:") and endpoint is None:
                    endpoint = line[5:].strip()
                    break
        assert endpoint is not None
        yield stream, lines, endpoint


async def legacy_answer(lines, message_id: Any, timeout: float = 15) -> dict:
    async with asyncio.timeout(timeout):
        async for line in lines:
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("id") == message_id and "method" not in message:
                    return message
    raise AssertionError("stream ended without the answer")


async def legacy_initialize(client: httpx.AsyncClient, base: str, endpoint: str, lines, key: dict[str, str]) -> None:
    init = jsonrpc("initialize", {"protocolVersion": "2024-11-05", "capabilities": {},
                                  "clientInfo": {"name": "attacker", "version": "0"}}, id=1)
    assert (await client.post(base + endpoint, json=init, headers={**LEGACY_POST, **key})).status_code == 202
    assert "result" in await legacy_answer(lines, 1)
    r = await client.post(base + endpoint, json=jsonrpc("notifications/initialized", id=None),
                          headers={**LEGACY_POST, **key})
    assert r.status_code == 202


class Attempt:
    """What an attacker got: the status and whatever body arrived within a few seconds (a stream
    the gateway let through would otherwise never end)."""

    def __init__(self, status_code: int, text: str):
        self.status_code, self.text = status_code, text

    def json(self) -> Any:
        return json.loads(self.text)


async def attempt(client: httpx.AsyncClient, method: str, url: str, headers: dict[str, str], **kw: Any) -> Attempt:
    async with client.stream(method, url, headers=headers, **kw) as r:
        text = ""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3):
                async for chunk in r.aiter_text():
                    text += chunk
        return Attempt(r.status_code, text)


def is_unknown_session(r: httpx.Response | Attempt, *, jsonrpc_body: bool) -> bool:
    if r.status_code != 404:
        return False
    body = r.json()
    if jsonrpc_body:
        return body["jsonrpc"] == "2.0" and body["error"]["message"] == "Session not found"
    return body == {"message": "Session not found"}


# --- item 2: list answers are filtered whatever the client correlated ------------------------

async def test_streamable_replay_after_last_event_id_shows_only_the_developers_tools(gateway, upstream):
    """ping id 7, tools/list id 7, prompts/list id 7 the upstream refuses (406), then resume the
    ping's stream: the upstream replays the tools/list answer on the GET."""
    url = gateway.url("/github-mcp")
    async with http_client() as client:
        session = await initialize(client, url, DEV)
        headers = {**STREAMABLE, **DEV, "Mcp-Session-Id": session}
        ping = await post_events(client, url, jsonrpc("ping", id=7), headers)
        ping_event = next(e["id"] for e in ping if e["data"] and json.loads(e["data"]).get("id") == 7)
        listed = await post_events(client, url, jsonrpc("tools/list", {}, id=7), headers)
        assert tools_in(listed) == set(READ_TOOLS)
        refused = await client.post(url, json=jsonrpc("prompts/list", {}, id=7),
                                    headers={**headers, "Accept": "application/json"})
        assert refused.status_code == 406  # never processed by the upstream
        resume = {**DEV, "Accept": "text/event-stream", "Mcp-Session-Id": session, "MCP-Protocol-Version": PROTOCOL,
                  "Last-Event-ID": ping_event}
        async with client.stream("GET", url, headers=resume) as stream:
            assert stream.status_code == 200
            replayed = await read_until(stream, answer_to(7))
    assert messages(replayed)[-1]["result"]["tools"], "the upstream replayed the tools/list answer"
    assert tools_in(replayed) == set(READ_TOOLS)


async def test_legacy_stream_shows_only_the_developers_tools_whatever_was_posted_under_the_id(gateway, upstream):
    """The developer's GET stream carries a session header of its own; a prompts/list id 7 sent
    with it to a session_id the upstream does not know, then tools/list id 7 to the real endpoint:
    the answer on the stream must still be filtered."""
    async with http_client() as client:
        own_session = await initialize(client, gateway.url("/gh/mcp"), DEV)  # a session id that is the developer's
        async with legacy_stream(client, gateway.url("/gh/sse"), {**DEV, "Mcp-Session-Id": own_session}) as (_, lines,
                                                                                                             endpoint):
            await legacy_initialize(client, gateway.base, endpoint, lines, DEV)
            bogus = endpoint.split("?")[0] + "?session_id=" + uuid.uuid4().hex
            r = await client.post(gateway.url(bogus), json=jsonrpc("prompts/list", {}, id=7),
                                  headers={**LEGACY_POST, **DEV, "Mcp-Session-Id": own_session})
            assert r.status_code == 404  # the gateway (unknown session) or the upstream: not processed
            r = await client.post(gateway.url(endpoint), json=jsonrpc("tools/list", {}, id=7),
                                  headers={**LEGACY_POST, **DEV})
            assert r.status_code == 202
            answer = await legacy_answer(lines, 7)
    shown = {t["name"] for t in answer["result"]["tools"]}
    assert shown == set(READ_TOOLS) and not shown & ADMIN_ONLY


async def test_legacy_stream_under_a_session_id_the_gateway_never_issued_is_refused(gateway, upstream):
    upstream.reset()
    async with http_client() as client:
        r = await attempt(client, "GET", gateway.url("/gh/sse"),
                          {**DEV, "Accept": "text/event-stream", "Mcp-Session-Id": "chosen-by-me"})
    assert is_unknown_session(r, jsonrpc_body=False)
    assert upstream.requests() == []


# --- item 3: a session belongs to the caller that opened it --------------------------------------

async def test_developer_with_the_admins_session_id_gets_404_and_the_upstream_sees_nothing(gateway, upstream):
    url = gateway.url("/github-mcp")
    async with http_client() as client:
        session = await initialize(client, url, ADMIN)
        admin = {**STREAMABLE, **ADMIN, "Mcp-Session-Id": session}
        read = await post_events(client, url, READ_FILE, admin)
        first_event = read[0]["id"]  # the priming event: resuming from it replays the result
        assert FILE_MARK in json.dumps(messages(read)[-1])

        upstream.reset()
        stolen = {**DEV, "Mcp-Session-Id": session, "MCP-Protocol-Version": PROTOCOL}
        sse = {"Accept": "text/event-stream"}
        tries = {
            "POST": await attempt(client, "POST", url, {**STREAMABLE, **stolen}, json=READ_FILE),
            "POST tools/list": await attempt(client, "POST", url, {**STREAMABLE, **stolen},
                                             json=jsonrpc("tools/list", {}, id=3)),
            "GET": await attempt(client, "GET", url, {**stolen, **sse}),
            "GET Last-Event-ID": await attempt(client, "GET", url, {**stolen, **sse, "Last-Event-ID": first_event}),
            "DELETE": await attempt(client, "DELETE", url, stolen),
            "no key": await attempt(client, "GET", url, {"Mcp-Session-Id": session, **sse}),
        }
        for what, r in tries.items():
            if what == "no key":
                assert r.status_code == 401  # key-auth answers first: no credential at all
            else:
                assert is_unknown_session(r, jsonrpc_body=what.startswith("POST")), (what, r.status_code, r.text)
            assert FILE_MARK not in r.text and "push_files" not in r.text
        assert upstream.requests() == [], "the upstream saw the developer's requests"

        # The admin's own session is intact: it resumes its stream and reads its result again.
        async with client.stream("GET", url, headers={**ADMIN, "Accept": "text/event-stream", "Mcp-Session-Id": session,
                                                      "MCP-Protocol-Version": PROTOCOL,
                                                      "Last-Event-ID": first_event}) as stream:
            assert stream.status_code == 200
            replayed = await read_until(stream, answer_to(2))
        assert FILE_MARK in json.dumps(messages(replayed)[-1])
        assert (await client.delete(url, headers=admin)).status_code == 200


async def test_look_alike_session_headers_are_checked_too(gateway, upstream):
    url = gateway.url("/github-mcp")
    async with http_client() as client:
        session = await initialize(client, url, ADMIN)
        upstream.reset()
        for name in ("Mcp_Session_Id", "MCP-SESSION-ID"):
            r = await client.post(url, json=READ_FILE, headers={**STREAMABLE, **DEV, name: session})
            assert is_unknown_session(r, jsonrpc_body=True), name
        # A session of its own plus the admin's: still refused.
        own = await initialize(client, url, DEV)
        r = await client.post(url, json=READ_FILE,
                              headers=[*{**STREAMABLE, **DEV}.items(), ("Mcp-Session-Id", own), ("Mcp-Session-Id", session)])
        assert is_unknown_session(r, jsonrpc_body=True)
    assert [e["rpc_method"] for e in upstream.requests()] == ["initialize", "notifications/initialized"]  # its own


async def test_developer_cannot_post_into_an_admins_legacy_session(gateway, upstream):
    async with http_client() as client:
        async with legacy_stream(client, gateway.url("/gh/sse"), ADMIN) as (_, lines, endpoint):
            await legacy_initialize(client, gateway.base, endpoint, lines, ADMIN)
            upstream.reset()
            for key in (DEV, {}):
                r = await client.post(gateway.url(endpoint), json=READ_FILE, headers={**LEGACY_POST, **key})
                assert r.status_code == (404 if key else 401), r.text
            spelled = endpoint.replace("session_id=", "session%5Fid=")  # decoded by the upstream all the same
            r = await client.post(gateway.url(spelled), json=READ_FILE, headers={**LEGACY_POST, **DEV})
            assert is_unknown_session(r, jsonrpc_body=True)
            assert upstream.requests() == []
            # The admin goes on using its session.
            r = await client.post(gateway.url(endpoint), json=READ_FILE, headers={**LEGACY_POST, **ADMIN})
            assert r.status_code == 202
            assert FILE_MARK in json.dumps(await legacy_answer(lines, 2))


async def test_intercept_mode_binds_sessions_the_same(gateway, upstream):
    async with http_client(gateway, intercept=True) as client:
        session = await initialize(client, upstream.url, ADMIN)
        upstream.reset()
        r = await client.post(upstream.url, json=READ_FILE, headers={**STREAMABLE, **DEV, "Mcp-Session-Id": session})
        assert is_unknown_session(r, jsonrpc_body=True)
        assert upstream.requests() == []
        r = await client.post(upstream.url, json=READ_FILE, headers={**STREAMABLE, **ADMIN, "Mcp-Session-Id": session})
        assert r.status_code == 200 and FILE_MARK in r.text


async def test_route_without_authentication_binds_sessions_to_the_credential_presented(gateway, upstream):
    url = gateway.url("/open")
    alice, mallory = {"Authorization": "Bearer alice-upstream-token"}, {"Authorization": "Bearer mallory-token"}
    async with http_client() as client:
        session = await initialize(client, url, alice)
        upstream.reset()
        for key in (mallory, {}):
            r = await client.post(url, json=READ_FILE, headers={**STREAMABLE, **key, "Mcp-Session-Id": session})
            assert is_unknown_session(r, jsonrpc_body=True), key
        assert upstream.requests() == []
        r = await client.post(url, json=READ_FILE, headers={**STREAMABLE, **alice, "Mcp-Session-Id": session})
        assert r.status_code == 200


async def test_session_ids_the_gateway_never_issued_are_unknown(gateway, upstream):
    upstream.reset()
    async with http_client() as client:
        for path in ("/github-mcp", "/open"):
            r = await client.post(gateway.url(path), json=jsonrpc("tools/list", {}, id=9),
                                  headers={**STREAMABLE, **DEV, "Mcp-Session-Id": uuid.uuid4().hex})
            assert is_unknown_session(r, jsonrpc_body=True)
            assert r.json()["id"] is None  # answered before the body is read
    assert upstream.requests() == []


# --- bindings across reloads, DELETE and idleness --------------------------------------------------

async def test_bindings_survive_a_reload_end_on_delete_and_expire_when_idle(workdir, upstream):
    gw = Gateway(workdir, policy(upstream), name="gateway-reload", intercept=False)
    try:
        url = gw.url("/github-mcp")
        async with http_client() as client:
            kept = await initialize(client, url, ADMIN)
            ended = await initialize(client, url, ADMIN)
            gw.write_policy(policy(upstream, sessions={"idle_ttl": 1}))
            gw.process.wait_for(r"policy version 2 loaded")
            admin = {**STREAMABLE, **ADMIN, "Mcp-Session-Id": kept}
            assert (await client.post(url, json=READ_FILE, headers=admin)).status_code == 200  # survived the reload
            r = await client.post(url, json=READ_FILE, headers={**STREAMABLE, **DEV, "Mcp-Session-Id": kept})
            assert is_unknown_session(r, jsonrpc_body=True)

            assert (await client.delete(url, headers={**ADMIN, "Mcp-Session-Id": ended})).status_code == 200
            upstream.reset()
            r = await client.post(url, json=READ_FILE, headers={**STREAMABLE, **ADMIN, "Mcp-Session-Id": ended})
            assert is_unknown_session(r, jsonrpc_body=True)  # ended: the gateway answers, not the upstream
            assert upstream.requests() == []

            await asyncio.sleep(1.5)  # idle past the new TTL (1 s, applied from the last request on)
            r = await client.post(url, json=READ_FILE, headers=admin)
            assert is_unknown_session(r, jsonrpc_body=True)
            assert upstream.requests() == []
    finally:
        gw.stop()
