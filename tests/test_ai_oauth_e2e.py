"""LLM routes with OAuth (the same resource server as MCP routes): the agent's SDK api_key is its
IdP access token, which the gateway validates, maps to a consumer, and replaces with the
provider key; a forged or foreign token never reaches the provider."""

from __future__ import annotations

import openai
import pytest

from scripts.demo_llm_provider import Provider
from tests.support.authserver import running_auth_server
from tests.support.gateway import Gateway
from tests.support.threaded_server import ThreadedServer

pytestmark = pytest.mark.e2e

PROVIDER_KEY = "sk-oauth-route-provider-key-61"
MESSAGES = [{"role": "user", "content": "who am I"}]


def test_oauth_identity_on_an_llm_route(tmp_path):
    provider = Provider()
    server = ThreadedServer(provider.app)
    server.start()
    with running_auth_server() as auth:
        resource = "https://gateway.example.com/llm"
        policy = {"version": 1, "consumer_groups": ["developer", "chatters"],
                  "consumers": {"dev-user": {"groups": ["developer"]}},
                  "services": {"llm": {"url": server.base_url + "/v1"}},
                  "routes": {"llm": {"service": "llm", "paths": ["/llm"],
                                     "oauth": {"authorization_servers": [auth.url], "jwks_endpoint": auth.jwks_url,
                                               "resource": resource, "consumer_claim": ["sub"]},
                                     "ai": {"route_type": "llm/v1/chat", "model": {"name": "gpt-4o"},
                                            "auth": {"header_name": "Authorization", "header_value": f"Bearer {PROVIDER_KEY}"},
                                            "consumer_groups": {"developer": {"options": {"max_tokens": 77}}}}}}}
        gw = Gateway(tmp_path, policy, intercept=False)
        try:
            token = auth.mint("dev-user", aud=resource)
            oai = openai.OpenAI(api_key=token, base_url=gw.url("/llm"), max_retries=0)
            answer = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            assert answer.choices[0].message.content == "echo: who am I"
            seen = provider.requests[-1]
            assert seen["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}" and token not in str(seen)
            assert seen["body"]["max_tokens"] == 77  # dev-user's group, from the token's consumer
            provider.requests.clear()
            for bad in (auth.mint("dev-user", aud="https://other.example.com"), auth.alg_none_token("dev-user", aud=resource),
                        "not-a-token"):
                with pytest.raises(openai.AuthenticationError):
                    openai.OpenAI(api_key=bad, base_url=gw.url("/llm"), max_retries=0).chat.completions.create(
                        model="gpt-4o", messages=MESSAGES)
            assert provider.requests == []
        finally:
            gw.stop()
            server.stop()
