"""The official MCP SDK's OAuth client (`OAuthClientProvider`) driven without a person: the
"browser" follows the authorization URL, which the test authorization server approves at once,
and hands the code back to the SDK."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

REDIRECT_URI = "http://127.0.0.1:9/callback"  # never contacted: the code is read off the redirect


class InMemoryTokenStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None
        self.redirect: dict[str, str] = {}  # the query of the last authorization redirect (code, state, iss)

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def oauth_provider(server_url: str, client_name: str = "e2e", **metadata: object
                   ) -> tuple[OAuthClientProvider, InMemoryTokenStorage]:
    storage = InMemoryTokenStorage()
    callback = storage.redirect

    async def open_browser(authorization_url: str) -> None:
        async with httpx.AsyncClient() as browser:
            response = await browser.get(authorization_url)
        assert response.status_code == 302, response.text
        query = parse_qs(urlsplit(response.headers["location"]).query)
        callback.update({name: values[0] for name, values in query.items()})

    async def receive_callback() -> tuple[str, str | None]:
        return callback["code"], callback.get("state")

    provider = OAuthClientProvider(
        server_url=server_url,
        client_metadata=OAuthClientMetadata(redirect_uris=[REDIRECT_URI], client_name=client_name, **metadata),
        storage=storage, redirect_handler=open_browser, callback_handler=receive_callback)
    return provider, storage
