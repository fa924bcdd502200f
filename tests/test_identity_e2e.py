"""Identity and OAuth discovery end to end: the seed recipe's passthrough pattern (PRM challenge,
rewritten PRM, key-auth beside the user's own bearer token) with a real mitmdump, the demo
upstream requiring a bearer like GitHub's, the local authorization server and the official MCP
client, including its complete OAuth flow through the gateway."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterator

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.oauth_client import oauth_provider
from tests.support.authserver import AuthServer, running_auth_server
from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, http_client, jsonrpc, mcp_session
from tests.support.threaded_server import ThreadedServer

pytestmark = pytest.mark.e2e

INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
USER_TOKEN = "gho_user_token_for_github"
ENV_KEY = "MCPGW_E2E_ENV_API_KEY"
PRM_PATH = "/.well-known/oauth-protected-resource"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("identity")


@pytest.fixture(scope="module")
def auth() -> Iterator[AuthServer]:
    with running_auth_server() as server:
        yield server


@pytest.fixture(scope="module")
def upstream(workdir, auth):
    up = DemoUpstream(workdir, "--require-bearer", "--json-response", "--auth-server", auth.url)
    yield up
    up.stop()


class MetadataServer:
    """An upstream PRM endpoint that records the headers of every request it gets."""

    DOCUMENT = {"resource": "http://upstream.invalid/mcp", "authorization_servers": ["https://github.com/login/oauth"],
                "scopes_supported": ["repo"], "resource_name": "recorder"}

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

        async def metadata(request: Request) -> JSONResponse:
            self.seen.append(dict(request.headers))
            return JSONResponse(self.DOCUMENT)

        self.server = ThreadedServer(Starlette(routes=[Route(PRM_PATH + "/mcp", metadata)]))


@pytest.fixture(scope="module")
def metadata_server() -> Iterator[MetadataServer]:
    recorder = MetadataServer()
    recorder.server.start()
    yield recorder
    recorder.server.stop()


def policy(upstream: DemoUpstream, auth: AuthServer, metadata_server: MetadataServer) -> dict:
    return {
        "consumer_groups": ["admin", "developer"],
        "consumers": {
            "admin-user": {"groups": ["admin"], "keys": ["admin-api-key"]},
            "dev-user": {"groups": ["developer"], "keys": ["dev-api-key"]},
            "hashed-user": {"groups": ["developer"], "keys": ["sha256:" + hashlib.sha256(b"hashed-api-key").hexdigest()]},
            "env-user": {"groups": ["admin"], "keys": [f"{{env://{ENV_KEY}}}"]},
        },
        "services": {"github": {"url": upstream.url}, "recorder": {"url": metadata_server.server.base_url + "/mcp"}},
        "routes": {
            # the recipe's github-mcp route
            "github-mcp": {"service": "github", "paths": ["/github-mcp"], "prm": {"challenge": True, "mode": "rewrite"},
                           "key_auth": {"key_names": ["apikey"], "hide_credentials": True},
                           "upstream_identity_headers": True},
            # no challenge and no key-auth: the upstream's own 401 reaches the client, pointed at the gateway
            "github-open": {"service": "github", "paths": ["/github-open"], "prm": {}},
            "github-served": {"service": "github", "paths": ["/github-served"],
                              "prm": {"mode": "serve", "authorization_servers": [auth.url], "scopes_supported": ["mcp"]}},
            "recorder": {"service": "recorder", "paths": ["/recorder"], "prm": {}},
        },
    }


@pytest.fixture(scope="module")
def gateway(workdir, upstream, auth, metadata_server):
    gw = Gateway(workdir, policy(upstream, auth, metadata_server), env={ENV_KEY: "env-api-key"})
    yield gw
    gw.stop()


@pytest.fixture
def recorded(upstream):
    """What reaches the upstream during the test."""
    upstream.reset()
    return upstream.requests


async def initialize(url: str, headers: dict[str, str], **client) -> httpx.Response:
    async with http_client(**client) as c:
        return await c.post(url, json=jsonrpc("initialize", INIT), headers={**MCP_HEADERS, **headers})


def prm_url(gateway: Gateway, route_path: str) -> str:
    return gateway.url(PRM_PATH + route_path)


# -- the seed recipe's dual-auth flow ------------------------------------------------------------


async def test_no_authorization_gets_401_pointing_at_the_gateway_prm(gateway, recorded):
    resp = await initialize(gateway.url("/github-mcp"), {"apikey": "dev-api-key"})
    assert resp.status_code == 401 and resp.json()["message"].startswith("Missing Authorization header: this route "
                                                                        "needs your own OAuth access token for the upstream")
    assert resp.headers["www-authenticate"] == \
        f'Bearer resource_metadata="{prm_url(gateway, "/github-mcp")}"'  # no credential sent: no error (RFC 6750 3.1)
    assert recorded() == []


async def test_prm_through_the_gateway_names_the_gateway(gateway, upstream, auth):
    async with http_client() as c:
        direct = (await c.get(upstream.base + PRM_PATH + "/mcp")).json()
        resp = await c.get(prm_url(gateway, "/github-mcp"))
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["resource"] == gateway.url("/github-mcp")
    assert doc["authorization_servers"] == [auth.url] == direct["authorization_servers"]
    assert doc == {**direct, "resource": gateway.url("/github-mcp")} and list(doc) == list(direct)


async def test_key_and_bearer_together_reach_the_upstream_as_bearer_and_consumer(gateway, recorded):
    headers = {"apikey": "dev-api-key", "Authorization": f"Bearer {USER_TOKEN}"}
    async with mcp_session(gateway.url("/github-mcp"), headers=headers) as session:
        tools = (await session.list_tools()).tools
    assert len(tools) > 100
    seen = recorded()
    assert [r["rpc_method"] for r in seen][:2] == ["initialize", "notifications/initialized"]
    for r in seen:
        assert r["headers"]["authorization"] == f"Bearer {USER_TOKEN}"
        assert "apikey" not in r["headers"]
        assert r["headers"]["x-consumer-username"] == "dev-user"
        assert r["headers"]["x-consumer-groups"] == "developer"


@pytest.mark.parametrize("headers, message", [
    ({"apikey": "wrong-key"}, "Unauthorized"),
    ({}, "No API key found in request"),
    ({"apikey": "dev-api-key", "APIKEY": "admin-api-key"}, "Duplicate API key found"),
])
async def test_key_auth_refusals(gateway, recorded, headers, message):
    async with http_client() as c:
        resp = await c.post(gateway.url("/github-mcp"), json=jsonrpc("initialize", INIT),
                            headers=httpx.Headers([*MCP_HEADERS.items(), ("Authorization", f"Bearer {USER_TOKEN}"),
                                                   *headers.items()]))
    assert resp.status_code == 401 and resp.json() == {"message": message}
    assert resp.headers["www-authenticate"] == "Key"
    assert recorded() == []


async def test_key_in_the_query_string_is_hidden_from_the_upstream(gateway, recorded):
    resp = await initialize(gateway.url("/github-mcp?apikey=admin-api-key"), {"Authorization": f"Bearer {USER_TOKEN}"})
    assert resp.status_code == 200
    (seen,) = recorded()
    assert seen["query"] == "" and seen["headers"]["x-consumer-username"] == "admin-user"


@pytest.mark.parametrize("key, consumer", [("dev-api-key", "dev-user"), ("hashed-api-key", "hashed-user"),
                                           ("env-api-key", "env-user")])
async def test_plain_hashed_and_env_keys(gateway, recorded, key, consumer):
    resp = await initialize(gateway.url("/github-mcp"), {"apikey": key, "Authorization": f"Bearer {USER_TOKEN}"})
    assert resp.status_code == 200
    assert [r["headers"]["x-consumer-username"] for r in recorded()] == [consumer]


async def test_client_sent_consumer_headers_never_reach_the_upstream(gateway, recorded):
    forged = {"X-Consumer-Username": "admin-user", "X-Consumer-Groups": "admin", "X-Consumer-ID": "1",
              "X-Anonymous-Consumer": "false", "Authorization": f"Bearer {USER_TOKEN}"}
    assert (await initialize(gateway.url("/github-mcp"), {**forged, "apikey": "dev-api-key"})).status_code == 200
    assert (await initialize(gateway.url("/github-open"), forged)).status_code == 200
    identity = [(r["headers"].get("x-consumer-username"), r["headers"].get("x-consumer-groups")) for r in recorded()]
    assert identity == [("dev-user", "developer"), (None, None)]


async def test_missing_env_secret_is_a_policy_error_at_load(workdir, upstream, auth, metadata_server):
    bad = Gateway(workdir, policy(upstream, auth, metadata_server), intercept=False, name="no-env-secret", wait=False)
    try:
        assert bad.process.proc.wait(30) != 0
        assert f"{{env://{ENV_KEY}}}" in bad.log() and f"{ENV_KEY} is not set" in bad.log()
    finally:
        bad.stop()


# -- discovery -----------------------------------------------------------------------------------


async def test_prm_fetch_carries_none_of_the_client_credentials(gateway, metadata_server):
    metadata_server.seen.clear()
    async with http_client() as c:
        resp = await c.get(prm_url(gateway, "/recorder"), headers={
            "Authorization": f"Bearer {USER_TOKEN}", "apikey": "dev-api-key", "Cookie": "session=secret",
            "X-Api-Key": "other", "MCP-Protocol-Version": "2025-06-18"})
    assert resp.json() == {**MetadataServer.DOCUMENT, "resource": gateway.url("/recorder")}
    (headers,) = metadata_server.seen
    assert not {"authorization", "apikey", "cookie", "x-api-key"} & set(headers)
    assert headers["mcp-protocol-version"] == "2025-06-18"


async def test_upstream_401_points_at_the_gateway_prm(gateway, upstream, recorded):
    resp = await initialize(gateway.url("/github-open"), {})
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_token"  # the upstream's own answer
    assert resp.headers["www-authenticate"] == f'Bearer resource_metadata="{prm_url(gateway, "/github-open")}"'
    assert [r["path"] for r in recorded()] == ["/mcp"]


async def test_served_prm_for_a_gateway_resource_server(gateway, auth):
    async with http_client() as c:
        resp = await c.get(prm_url(gateway, "/github-served"))
    assert resp.json() == {"resource": gateway.url("/github-served"), "authorization_servers": [auth.url],
                           "scopes_supported": ["mcp"], "bearer_methods_supported": ["header"]}


async def test_https_listener_gets_https_urls(gateway):
    """mitmproxy answers TLS on the reverse listener too; the URLs follow the scheme the client used."""
    base = gateway.url().replace("http://", "https://")
    async with http_client(verify=ssl.create_default_context(cafile=gateway.ca_cert)) as c:
        resp = await c.get(base + PRM_PATH + "/github-mcp")
        challenge = await c.post(base + "/github-mcp", json=jsonrpc("initialize", INIT), headers=MCP_HEADERS)
    assert resp.json()["resource"] == base + "/github-mcp"
    assert challenge.headers["www-authenticate"].startswith(f'Bearer resource_metadata="{base}{PRM_PATH}/github-mcp"')


async def test_intercept_mode_prm_passes_through_and_challenge_names_the_upstream(gateway, upstream):
    async with http_client() as c:
        direct = await c.get(upstream.base + PRM_PATH + "/mcp")
    async with http_client(gateway, intercept=True) as c:
        proxied = await c.get(upstream.base + PRM_PATH + "/mcp")
        challenge = await c.post(upstream.url, json=jsonrpc("initialize", INIT), headers={**MCP_HEADERS, "apikey": "dev-api-key"})
    assert proxied.status_code == 200 and proxied.json() == direct.json()
    assert proxied.json()["resource"] == upstream.url
    assert challenge.status_code == 401 and challenge.json()["message"].startswith("Missing Authorization header")  # the gateway's
    assert challenge.headers["www-authenticate"].startswith(
        f'Bearer resource_metadata="{upstream.base}{PRM_PATH}/mcp"')


# -- the official client's whole OAuth flow through the gateway -------------------------------------


async def test_official_client_discovers_github_oauth_through_the_gateway(gateway, auth, recorded):
    url = gateway.url("/github-mcp")
    provider, storage = oauth_provider(url, token_endpoint_auth_method="none")
    async with mcp_session(url, headers={"apikey": "admin-api-key"}, auth=provider) as session:
        assert (await session.list_tools()).tools
    token = storage.tokens.access_token
    # The client asked for a token for the gateway's URL (RFC 8707 resource), as the rewritten PRM
    # told it; the upstream got that token unchanged, and the consumer came from the key.
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == url
    seen = recorded()
    assert seen and all(r["headers"]["authorization"] == f"Bearer {token}" for r in seen)
    assert {r["headers"]["x-consumer-username"] for r in seen} == {"admin-user"}
