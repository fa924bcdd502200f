"""Kong's "Secure External MCP Gateway" recipe (seeds/003), end to end, from its own decK file.

tests/data/kong-recipe.yaml is the recipe's decK file; here only its upstream ports and protocols
are pointed at local servers and its DECK_* variables are set. Then the recipe's "Try it out"
runs against a real mitmdump: the GitHub route (datakit PRM challenge, rewritten PRM, dual auth
with key-auth beside the GitHub token, the ACL matrix and its -32602 denial) and the Konnect
route (ai-mcp-oauth2 challenge and PRM, introspection at a real authorization server, the token
swap). Everything runs twice: with the decK file as the policy, and with the native policy that
scripts/deck2policy prints for it."""

from __future__ import annotations

import re
import secrets
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from mcp import McpError

from mcpgw.policy.deck import convert_file, kong_id
from scripts.demo_github_tools import READ_TOOLS, TOOL_NAMES, WRITE_TOOLS
from scripts.demo_upstream import Settings, build_app
from tests.support.authserver import AuthServer, running_auth_server
from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, jsonrpc, mcp_session, parse_mcp_body

pytestmark = pytest.mark.e2e

RECIPE = Path(__file__).parent / "data" / "kong-recipe.yaml"
PUBLIC = "https://localhost:8443"  # where the recipe's Kong listens: the URLs its configuration names
GITHUB_PRM = "/.well-known/oauth-protected-resource/github-mcp"
KONNECT_PRM = "/.well-known/oauth-protected-resource/konnect-mcp"
GITHUB_TOKEN = "ghu_" + secrets.token_urlsafe(18)  # what GitHub's OAuth flow would have given the client
KONNECT_TOKEN = "kpat_" + secrets.token_urlsafe(18)  # the stored Konnect credential (DECK_KONNECT_MCP_TOKEN)
DEV = {"apikey": "dev-api-key", "Authorization": f"Bearer {GITHUB_TOKEN}"}
ADMIN = {"apikey": "admin-api-key", "Authorization": f"Bearer {GITHUB_TOKEN}"}
INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "insomnia", "version": "12"}}
SEARCH = {"query": "kong gateway language:go"}
CALL_TIMEOUT = timedelta(seconds=15)


def denial(tool: str) -> str:
    return f"Tool '{tool}' is not available for consumer group 'developer'"


class RootUpstream:
    """Konnect's MCP server answers at the root of its host (the recipe's service has no path):
    the demo upstream, served on a thread with its MCP endpoint moved from /mcp to /."""

    def __init__(self) -> None:
        inner = build_app(Settings(record=True, require_bearer=True))

        async def at_root(scope, receive, send):
            if scope["type"] == "http" and scope["path"] == "/":
                scope = {**scope, "path": "/mcp", "raw_path": b"/mcp"}
            await inner(scope, receive, send)

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(at_root, lifespan="on", log_level="warning", access_log=False))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "the Konnect stand-in did not start"
            time.sleep(0.01)

    def requests(self) -> list[dict]:
        return httpx.get(f"{self.base}/_test/requests", timeout=10).json()

    def reset(self) -> None:
        httpx.post(f"{self.base}/_test/reset", timeout=10).raise_for_status()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def local_recipe(github_port: int, konnect_port: int) -> str:
    """The recipe's decK file with its upstreams' ports and protocols pointed at the local servers
    (the GitHub host is already the local placeholder; Konnect's comes from DECK_KONNECT_MCP_HOST)."""
    text = RECIPE.read_text()
    github, sep, konnect = text.partition("- name: konnect-mcp-service\n")
    assert sep and github.count("  port: 443\n") == 2 and konnect.count("  port: 443\n  protocol: https\n") == 1
    github = github.replace("  port: 443\n", f"  port: {github_port}\n")
    konnect = konnect.replace("  port: 443\n  protocol: https\n", f"  port: {konnect_port}\n  protocol: http\n")
    return github + sep + konnect


def deck_env(idp: AuthServer) -> dict[str, str]:
    client_id, client_secret = idp.introspection_client
    return {
        "DECK_KONNECT_MCP_HOST": "127.0.0.1",
        "DECK_KONNECT_MCP_TOKEN": KONNECT_TOKEN,
        "DECK_OAUTH_AUTH_SERVER": idp.url,
        "DECK_OAUTH_INTROSPECTION_URL": idp.introspection_url,
        "DECK_OAUTH_CLIENT_ID": client_id,
        "DECK_OAUTH_CLIENT_SECRET": client_secret,
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("deck")


@pytest.fixture(scope="module")
def github(workdir):
    upstream = DemoUpstream(workdir, "--require-bearer", name="github", tls=True)  # https://localhost:PORT/mcp
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def konnect():
    upstream = RootUpstream()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def idp():
    with running_auth_server(token_format="opaque") as server:
        yield server


@pytest.fixture(scope="module", params=["deck", "native"])
def gateway(request, workdir, github, konnect, idp):
    """One gateway per variant: the decK file itself, or scripts/deck2policy's translation of it."""
    env = deck_env(idp)
    deck = workdir / "kong.yaml"
    deck.write_text(local_recipe(github.port, konnect.port))
    policy = deck
    if request.param == "native":
        policy = workdir / "native-policy.yaml"
        policy.write_text(convert_file(deck, env=env))
        assert KONNECT_TOKEN not in policy.read_text()  # secrets stay {env://...} references
    gw = Gateway(workdir, policy, intercept=False, env=env, name=request.param)
    yield gw
    gw.stop()


async def post(url: str, headers: dict[str, str] | None = None, message: dict | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=20) as client:
        return await client.post(url, json=message or jsonrpc("initialize", INIT), headers={**MCP_HEADERS, **(headers or {})})


# --- GitHub MCP: passthrough and dual auth -------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"apikey": "dev-api-key"}], ids=["nothing", "key-only"])
async def test_github_challenge_points_at_the_prm(gateway, github, headers):
    github.reset()
    refused = await post(gateway.url("/github-mcp"), headers)
    assert refused.status_code == 401
    # the recipe's datakit body is {"message": "Unauthorized"}; the gateway's says what is missing
    assert refused.json()["message"].startswith("Missing Authorization header: this route needs your own OAuth")
    assert refused.headers["content-type"].startswith("application/json")
    assert refused.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{gateway.url(GITHUB_PRM)}"')  # the recipe's error="invalid_token" goes: no token was sent
    assert github.requests() == []  # the datakit step runs before anything reaches GitHub


async def test_github_prm_is_the_upstreams_with_resource_rewritten(gateway, github):
    async with httpx.AsyncClient(timeout=20, verify=False) as client:
        original = (await client.get(f"{github.base}/.well-known/oauth-protected-resource/mcp")).json()
        response = await client.get(gateway.url(GITHUB_PRM))
    assert response.status_code == 200
    document = response.json()
    assert document["resource"] == f"{PUBLIC}/github-mcp"
    assert document["authorization_servers"] == ["https://github.com/login/oauth"]
    assert document == {**original, "resource": f"{PUBLIC}/github-mcp"}


@pytest.mark.parametrize("headers, message", [
    ({"Authorization": f"Bearer {GITHUB_TOKEN}"}, "No API key found in request"),
    ({"Authorization": f"Bearer {GITHUB_TOKEN}", "apikey": "another_key"}, "Unauthorized"),
], ids=["bearer-only", "unknown-key"])
async def test_github_needs_the_consumer_key_beside_the_token(gateway, github, headers, message):
    github.reset()
    refused = await post(gateway.url("/github-mcp"), headers)
    assert (refused.status_code, refused.json(), refused.headers["www-authenticate"]) == (401, {"message": message}, "Key")
    assert github.requests() == []


async def test_github_token_passes_through_and_the_key_does_not(gateway, github):
    github.reset()
    async with mcp_session(gateway.url("/github-mcp"), headers=DEV) as session:
        result = await session.call_tool("search_repositories", SEARCH, read_timeout_seconds=CALL_TIMEOUT)
    assert not result.isError and "kong" in result.content[0].text
    seen = github.requests()
    assert seen and {r["headers"].get("authorization") for r in seen} == {f"Bearer {GITHUB_TOKEN}"}
    assert not any("apikey" in r["headers"] for r in seen)  # hide_credentials
    assert github.tool_calls() == ["search_repositories"]


async def test_github_upstream_gets_kongs_identity_headers_not_forged_ones(gateway, github):
    """key-auth's upstream headers (Kong's set_consumer), whatever identity the client claims."""
    github.reset()
    forged = {"X-Consumer-Username": "admin-user", "X-Consumer-ID": "1", "X-Credential-Identifier": "x",
              "X-Consumer-Groups": "admin", "X-Anonymous-Consumer": "false"}
    async with mcp_session(gateway.url("/github-mcp"), headers={**DEV, **forged}) as session:
        await session.list_tools()
    seen = github.requests()
    consumer = kong_id("consumers", "dev-user")  # Kong's id for a decK consumer without one
    assert seen and all({k: v for k, v in r["headers"].items() if k.startswith(("x-consumer", "x-credential", "x-anon"))}
                        == {"x-consumer-id": consumer, "x-consumer-username": "dev-user",
                            "x-credential-identifier": kong_id("keyauth_credentials", f"{consumer}:0")} for r in seen)


# --- the ACL matrix ------------------------------------------------------------------------------


async def test_developer_lists_the_six_read_tools(gateway):
    async with mcp_session(gateway.url("/github-mcp"), headers=DEV) as session:
        tools = [t.name for t in (await session.list_tools()).tools]
    assert tools == [t for t in TOOL_NAMES if t in READ_TOOLS]


async def test_admin_lists_the_whole_catalog(gateway):
    async with mcp_session(gateway.url("/github-mcp"), headers=ADMIN) as session:
        tools = [t.name for t in (await session.list_tools()).tools]
    assert tools == TOOL_NAMES and len(tools) > 70


async def test_developer_calls_are_checked_server_side(gateway, github):
    github.reset()
    async with mcp_session(gateway.url("/github-mcp"), headers=DEV) as session:
        for tool in [*WRITE_TOOLS, "list_commits"]:  # list_commits is unlisted: default_acl denies developers
            with pytest.raises(McpError) as refused:
                await session.call_tool(tool, {}, read_timeout_seconds=CALL_TIMEOUT)
            assert (refused.value.error.code, refused.value.error.message) == (-32602, denial(tool))
    # A client that bypasses its filtered catalog and sends the raw JSON-RPC request:
    raw = await post(gateway.url("/github-mcp"), DEV, jsonrpc("tools/call", {"name": "push_files", "arguments": {}}, id=7))
    [error] = parse_mcp_body(raw)
    assert error["id"] == 7 and error["error"]["code"] == -32602 and error["error"]["message"] == denial("push_files")
    assert github.tool_calls() == []  # never reached GitHub


async def test_admin_may_push(gateway, github):
    github.reset()
    async with mcp_session(gateway.url("/github-mcp"), headers=ADMIN) as session:
        result = await session.call_tool("push_files", {"owner": "o", "repo": "r", "branch": "main", "files": [],
                                                        "message": "m"}, read_timeout_seconds=CALL_TIMEOUT)
    assert not result.isError
    assert github.tool_calls() == ["push_files"]


# --- Konnect MCP: OAuth at the organization's IdP and token swap -----------------------------------


async def test_konnect_challenge_and_served_prm(gateway, konnect, idp):
    konnect.reset()
    refused = await post(gateway.url("/konnect-mcp"))
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == f'Bearer resource_metadata="{gateway.url(KONNECT_PRM)}"'
    assert refused.json() == {"error": "unauthorized", "error_description": "Missing access token"}
    async with httpx.AsyncClient(timeout=20) as client:
        document = (await client.get(gateway.url(KONNECT_PRM))).json()
    assert document["resource"] == f"{PUBLIC}/konnect-mcp"
    assert document["authorization_servers"] == [idp.url]
    assert document["scopes_supported"] == ["openid"]
    assert konnect.requests() == []


async def test_konnect_token_is_introspected_and_swapped(gateway, konnect, idp):
    konnect.reset()
    token = idp.mint_opaque("dev-user")
    before = idp.introspection_calls
    async with mcp_session(gateway.url("/konnect-mcp"), headers={"Authorization": f"Bearer {token}"}) as session:
        assert "search_repositories" in {t.name for t in (await session.list_tools()).tools}
        result = await session.call_tool("search_repositories", SEARCH, read_timeout_seconds=CALL_TIMEOUT)
    assert not result.isError
    assert idp.introspection_calls > before
    seen = konnect.requests()
    assert seen and {r["headers"].get("authorization") for r in seen} == {f"Bearer {KONNECT_TOKEN}"}
    assert token not in repr(seen)


async def test_konnect_refuses_an_inactive_token(gateway, konnect, idp):
    konnect.reset()
    refused = await post(gateway.url("/konnect-mcp"), {"Authorization": f"Bearer {idp.mint_opaque(active=False)}"})
    assert refused.status_code == 401
    assert re.search(r'error="invalid_token"', refused.headers["www-authenticate"])
    assert konnect.requests() == []


# --- Kong's how-to "use access controls for MCP tools", with the denial of either Kong version ------

HOWTO = Path(__file__).parent / "data" / "kong-mcp-tool-acls.yaml"


@pytest.fixture(scope="module")
def marketplace(workdir):
    """The how-to's MCP server (its tool names do not matter here: the ACL decides before it)."""
    upstream = DemoUpstream(workdir, name="marketplace")
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module", params=["jsonrpc", "http403"])
def howto_gateway(request, workdir, marketplace):
    """The how-to's decK file as it is, its service pointed at the local server; mcp_deck_deny as
    a Kong 3.13 user (the default) or a 3.14+ one would set it."""
    text = HOWTO.read_text().replace("http://host.docker.internal:3001/mcp", marketplace.url)
    extra = [] if request.param == "jsonrpc" else ["--set", "mcp_deck_deny=http403"]
    gw = Gateway(workdir, text, intercept=False, extra=extra, name=f"howto-{request.param}")
    gw.deny = request.param
    yield gw
    gw.stop()


async def test_howto_denied_call_answers_as_the_kong_version_asked_for(howto_gateway, marketplace):
    marketplace.reset()
    call = jsonrpc("tools/call", {"name": "search_orders", "arguments": {}}, id=3)
    refused = await post(howto_gateway.url("/mcp"), {"apikey": "bob-key"}, call)
    [error] = parse_mcp_body(refused)
    text = "Tool 'search_orders' is not available for consumer group 'developer'"
    assert {k: v for k, v in error["error"].items() if k != "data"} == {"code": -32602, "message": text}
    if howto_gateway.deny == "http403":  # Kong 3.14+, with the reason where clients show it
        assert refused.status_code == 403 and refused.headers["www-authenticate"] == (
            f'Bearer error="insufficient_scope", error_description="{text}"')
        assert error["error"]["data"] == {"error": "insufficient_scope", "error_description": text}
    else:  # Kong 3.13, and the recipe's promise
        assert refused.status_code == 200
    assert marketplace.tool_calls() == []


async def test_howto_suspended_consumer_cannot_connect(howto_gateway, marketplace):
    """carol's group is denied every tool: her connection fails (the how-to), nothing reaches the server."""
    marketplace.reset()
    refused = await post(howto_gateway.url("/mcp"), {"apikey": "carol-key"})
    assert refused.status_code == (403 if howto_gateway.deny == "http403" else 200)
    [error] = parse_mcp_body(refused)
    text = "No tool is available for consumer group 'suspended'"
    assert {k: v for k, v in error["error"].items() if k != "data"} == {"code": -32602, "message": text}
    if howto_gateway.deny == "http403":
        assert f'error_description="{text}"' in refused.headers["www-authenticate"]
        assert error["error"]["data"] == {"error": "insufficient_scope", "error_description": text}
    async with httpx.AsyncClient(timeout=20) as client:
        stream = await client.get(howto_gateway.url("/mcp"), headers={"apikey": "carol-key", "Accept": "text/event-stream"})
    assert stream.status_code == 403
    if howto_gateway.deny == "jsonrpc":  # the official SDK's initialize fails with the gateway's message
        with pytest.raises(BaseException) as failed:
            async with mcp_session(howto_gateway.url("/mcp"), headers={"apikey": "carol-key"}):
                pass
        error = failed.value
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        assert isinstance(error, McpError) and str(error) == "No tool is available for consumer group 'suspended'"
    assert marketplace.requests() == []


async def test_howto_admin_and_eason_connect_and_call(howto_gateway, marketplace):
    marketplace.reset()
    async with mcp_session(howto_gateway.url("/mcp"), headers={"apikey": "alice-key"}) as session:
        result = await session.call_tool("search_repositories", SEARCH, read_timeout_seconds=CALL_TIMEOUT)
    assert not result.isError and marketplace.tool_calls() == ["search_repositories"]
    async with mcp_session(howto_gateway.url("/mcp"), headers={"apikey": "eason-key"}) as session:
        assert [t.name for t in (await session.list_tools()).tools] == []  # list_users is his; the server has none
