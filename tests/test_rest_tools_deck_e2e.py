"""Kong's documentation configurations of ai-mcp-proxy's conversion and listener modes
(../shared/kong-docs/cases/), loaded as written by a real mitmdump with only hosts and IdP URLs
changed, tried with the official MCP client as their pages describe: the Secure Internal MCP
Gateway recipe (20: OAuth, a listener aggregating three conversion-only APIs, per-tool ACLs on
IdP groups), "map an API to MCP tools" (15), "aggregate MCP tools" (13, a serviceless listener)
and the conversion-listener ACL example (06, key-auth consumers)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from mcp.shared.exceptions import McpError

from tests.support.gateway import MCP_HEADERS, Gateway, jsonrpc, mcp_session
from tests.support.rest_upstream import RestUpstream

CASES = Path(__file__).resolve().parents[2] / "shared" / "kong-docs" / "cases"
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not CASES.is_dir(), reason="the Kong docs corpus is not beside this checkout")]
RESOURCE = "https://mcp.example.com/ecommerce-mcp"
HOST = {"Host": "mcp.example.com"}
WAREHOUSE = {"list-orders", "get-order", "list-inventory", "check-inventory", "restock-item"}
SUPPORT = {"list-orders", "get-order", "cancel-order", "list-inventory", "check-inventory", "get-customer",
           "update-customer-contact"}


@pytest.fixture(scope="module")
def rest():
    server = RestUpstream().start()
    yield server
    server.stop()


def load(workdir: Path, case: str, replacements: dict[str, str], name: str, env: dict | None = None) -> Gateway:
    text = next(CASES.glob(f"{case}-*.yaml")).read_text()
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    return Gateway(workdir, text, intercept=False, name=name, env=env)


@pytest.fixture(scope="module")
def recipe(workdir, rest, auth):
    host, port = rest.url.removeprefix("http://").split(":")
    client_id, secret = auth.introspection_client
    gw = load(workdir, "20", {"host: httpbin.konghq.com\n  port: 443\n  protocol: https":
                              f"host: {host}\n  port: {port}\n  protocol: http"}, "recipe",
              {"DECK_MCP_RESOURCE_URL": RESOURCE, "DECK_OAUTH_AUTH_SERVER": auth.url,
               "DECK_OAUTH_INTROSPECTION_URL": auth.introspection_url, "DECK_OAUTH_CLIENT_ID": client_id,
               "DECK_OAUTH_CLIENT_SECRET": secret})
    yield gw
    gw.stop()


def bearer(auth, user: str, *groups: str) -> dict[str, str]:
    return {**HOST, "Authorization": f"Bearer {auth.mint(user, aud='account', groups=list(groups))}"}


async def tool_names(session) -> set[str]:
    return {t.name for t in (await session.list_tools()).tools}


async def test_recipe_each_group_sees_and_calls_exactly_its_tools(recipe, rest, auth):
    rest.reset()
    async with mcp_session(recipe.url("/ecommerce-mcp"), headers=bearer(auth, "wendy", "warehouse-ops")) as session:
        assert await tool_names(session) == WAREHOUSE
        restocked = await session.call_tool("restock-item", {"sku": "sku-1", "quantity": 5})
        assert not restocked.isError and restocked.structuredContent["path"] == "/anything/inventory/sku-1/restock"
        for denied in ("cancel-order", "get-customer"):
            with pytest.raises(McpError, match=f"Tool '{denied}' is not available for consumer group 'warehouse-ops'"):
                await session.call_tool(denied, {"orderId": "o-1", "customerId": "c-1"})
    assert [(r["method"], r["path"], r["query"]) for r in rest.received] == [
        ("POST", "/anything/inventory/sku-1/restock", "quantity=5")]  # the denied calls never reached the API
    rest.reset()
    async with mcp_session(recipe.url("/ecommerce-mcp"), headers=bearer(auth, "sam", "customer-support")) as session:
        assert await tool_names(session) == SUPPORT
        assert not (await session.call_tool("cancel-order", {"orderId": "o-1"})).isError
        assert not (await session.call_tool("update-customer-contact", {"customerId": "c-1", "email": "a@b.example"})).isError
        with pytest.raises(McpError, match="not available"):
            await session.call_tool("restock-item", {"sku": "sku-1", "quantity": 1})
    assert [(r["method"], r["path"], r["query"]) for r in rest.received] == [
        ("POST", "/anything/orders/o-1/cancel", ""), ("PUT", "/anything/customers/c-1/contact", "email=a%40b.example")]
    for seen in rest.received:  # the IdP token is the gateway's to check, not the APIs'
        assert not rest.header(seen, "authorization")


async def post(gw: Gateway, path: str, message: dict, headers: dict) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(gw.url(path), json=message, headers={**MCP_HEADERS, **headers})


async def test_recipe_refuses_strangers(recipe, rest, auth):
    init = jsonrpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                  "clientInfo": {"name": "t", "version": "1"}})
    rest.reset()
    anonymous = await post(recipe, "/ecommerce-mcp", init, HOST)
    assert anonymous.status_code == 401 and "resource_metadata=" in anonymous.headers["www-authenticate"]
    nobody = await post(recipe, "/ecommerce-mcp", init, bearer(auth, "mallory", "marketing"))
    assert nobody.status_code == 401  # consumer_groups_optional: false, and no group of the token is known
    wendy = await post(recipe, "/ecommerce-mcp", init, bearer(auth, "wendy", "warehouse-ops"))
    session = wendy.headers["mcp-session-id"]
    call = jsonrpc("tools/call", {"name": "list-orders", "arguments": {}})
    stolen = await post(recipe, "/ecommerce-mcp", call, {**bearer(auth, "sam", "customer-support"),
                                                         "Mcp-Session-Id": session})
    assert stolen.status_code == 404
    direct = await post(recipe, "/orders-mcp", init, bearer(auth, "wendy", "warehouse-ops"))
    assert direct.status_code == 404  # conversion-only: served by the listener only
    assert rest.received == []


async def test_howto_map_an_api_to_mcp_tools(workdir, rest):
    gw = load(workdir, "15", {"http://host.docker.internal:3000": rest.url}, "howto15")
    try:
        rest.reset()
        async with mcp_session(gw.url("/marketplace")) as session:
            assert await tool_names(session) == {"mcp-route-1", "mcp-route-2"}  # the page's "Called mcp-route-1"
            users = await session.call_tool("mcp-route-1", {})
            assert users.structuredContent["data"][0]["name"] == "Alice Johnson"
            orders = await session.call_tool("mcp-route-2", {"userid": "a1b2c3d4"})
            assert not orders.isError
            with pytest.raises(McpError, match="'userid' is a required property"):
                await session.call_tool("mcp-route-2", {})
        assert [(r["path"], r["query"]) for r in rest.received] == [("/users", ""), ("/orders", "userid=a1b2c3d4")]
    finally:
        gw.stop()


async def test_howto_aggregate_mcp_tools_on_a_serviceless_listener(workdir, rest):
    gw = load(workdir, "13", {"http://host.docker.internal:3000": rest.url,
                              "https://api.weatherapi.com/v1/current.json": rest.url + "/v1/current.json",
                              "https://api.freecurrencyapi.com/v1/latest": rest.url + "/v1/latest"}, "howto13",
              {"DECK_WEATHERAPI_API_KEY": "weather-key-0123456789", "DECK_FREECURRENCYAPI_API_KEY": "fx-key-0123456789"})
    try:
        rest.reset()
        async with mcp_session(gw.url("/mcp-listener")) as session:
            assert await tool_names(session) == {"mcp-route-1", "mcp-route-2", "weather-route-1", "freecurrency-route-1"}
            weather = await session.call_tool("weather-route-1", {"q": "Alexandria"})
            assert not weather.isError
            await session.call_tool("freecurrency-route-1", {"currencies": "EUR,USD"})
        assert [(r["path"], r["query"]) for r in rest.received] == [
            ("/v1/current.json", "key=weather-key-0123456789&q=Alexandria"),
            ("/v1/latest", "apikey=fx-key-0123456789&currencies=EUR%2CUSD")]
        log = gw.log()
        assert "weather-key-0123456789" not in log and "fx-key-0123456789" not in log
    finally:
        gw.stop()


async def test_conversion_listener_acl_example(workdir, rest):
    gw = load(workdir, "06", {"http://host.docker.internal:3000": rest.url}, "example06")
    try:
        async with mcp_session(gw.url("/marketplace"), headers={"apikey": "alice-key"}) as session:
            assert await tool_names(session) == {"Get users", "Get users orders"}
        async with mcp_session(gw.url("/marketplace"), headers={"apikey": "bob-key"}) as session:
            assert await tool_names(session) == {"Get users orders"}
            rest.reset()
            with pytest.raises(McpError, match="not available for consumer group 'developer'"):
                await session.call_tool("Get users", {})
            assert rest.received == []
        # a client that reads no SSE (Accept: application/json only): the denial still comes back
        # on this POST, and nothing reaches the API
        init = await post(gw, "/marketplace", jsonrpc("initialize", {}), {"apikey": "bob-key"})
        headers = {"apikey": "bob-key", "Mcp-Session-Id": init.headers["mcp-session-id"], "Accept": "application/json"}
        rest.reset()
        denied = await post(gw, "/marketplace", jsonrpc("tools/call", {"name": "Get users", "arguments": {}}, id=9),
                            headers)
        assert denied.json()["id"] == 9 and "not available" in denied.json()["error"]["message"]
        assert rest.received == []
        carol = await post(gw, "/marketplace", jsonrpc("initialize", {}), {"apikey": "carol-key"})
        assert carol.json()["error"]["message"] == "No tool is available for consumer group 'suspended'"
    finally:
        gw.stop()


async def test_howto_enforce_acls_on_aggregated_servers(workdir, rest):
    gw = load(workdir, "12", {"https://api.weatherapi.com": rest.url, "https://deckofcardsapi.com/api/deck":
                              rest.url + "/api/deck"}, "howto12", {"DECK_WEATHERAPI_API_KEY": "weather-key-0123456789"})
    try:
        rest.reset()
        async with mcp_session(gw.url("/mcp/aggregation"), headers={"apikey": "alice-key"}) as session:
            assert await tool_names(session) == {"draw-cards", "shuffle-and-draw", "shuffle-cards", "weather-internet"}
            await session.call_tool("shuffle-cards", {"deck_count": 6})
            await session.call_tool("draw-cards", {"deck_id": "xucbyje9gmy5", "count": 1})
            await session.call_tool("shuffle-and-draw", {"count": 2})
            await session.call_tool("weather-internet", {"q": "London"})
        assert [(r["path"], r["query"]) for r in rest.received] == [
            ("/api/deck/new/shuffle/", "deck_count=6"), ("/api/deck/xucbyje9gmy5/draw/", "count=1"),
            ("/api/deck/new/draw/", "count=2"), ("/v1/current.json", "key=weather-key-0123456789&q=London")]
        rest.reset()
        for stranger in ("carol-key", "eason-key"):  # bronze-partner is denied every tool; eason has no group
            answer = await post(gw, "/mcp/aggregation", jsonrpc("initialize", {}), {"apikey": stranger})
            assert answer.json()["error"]["message"].startswith("No tool is available for consumer")
        assert rest.received == []
    finally:
        gw.stop()
