"""Kong's acl plugin with consumers' `acls` credentials, end to end: Kong doc case 27 ("deny
consumers") as a decK file, run by a real mitmdump in front of the demo upstream. Kong's acl
matches ACL groups, and consumer groups only with include_consumer_groups."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from mcpgw.policy.loader import PolicyError, load_policy_file
from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, jsonrpc

CASE = Path(__file__).resolve().parents[2] / "shared" / "kong-docs" / "cases" / "27-acl-deny-consumers-on-mcp.yaml"
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not CASE.exists(), reason="the Kong docs corpus is not beside this checkout")]
INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}


def case(upstream, *, acls: bool = False, include: bool = False, authenticated: bool = False) -> dict:
    doc = yaml.safe_load(CASE.read_text().replace("http://host.docker.internal:3001", upstream.url))
    if acls:
        for consumer in doc["consumers"]:
            consumer["acls"] = [{"group": g["name"]} for g in consumer.get("groups", [])]
    acl = next(p for p in doc["plugins"] if p["name"] == "acl")["config"]
    if include:
        acl["include_consumer_groups"] = True
    if authenticated:  # no plugin authenticates groups here: Kong falls back to the consumer's acls
        acl["always_use_authenticated_groups"] = True
    return doc


async def status(gateway: Gateway, key: str) -> tuple[int, httpx.Response]:
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(gateway.url("/mcp"), json=jsonrpc("initialize", INIT), headers={**MCP_HEADERS, "apikey": key})
        return r.status_code, r


def test_case_27_as_written_names_groups_no_consumer_has(tmp_path, upstream):
    """In Kong this file denies nobody (dev and admin have consumer groups, no acls): refused with the reason."""
    path = tmp_path / "kong.yaml"
    path.write_text(yaml.safe_dump(case(upstream)))
    with pytest.raises(PolicyError) as refused:
        load_policy_file(path)
    assert "access names group 'dev', which is not declared in any consumer's acls" in str(refused.value.problems)


@pytest.mark.parametrize("variant", [{"acls": True}, {"include": True}, {"acls": True, "authenticated": True}],
                         ids=["acls-credentials", "consumer-groups", "always-use-authenticated-groups"])
async def test_case_27_denies_dev_and_admin(workdir, upstream, variant):
    name = "gw-" + "-".join(variant)
    gw = Gateway(workdir, yaml.safe_dump(case(upstream, **variant)) + "\n", intercept=False, name=name)
    try:
        upstream.reset()
        for key in ("dev-key", "admin-key"):
            code, response = await status(gw, key)
            assert code == 403 and response.json() == {"message": "You cannot consume this service"}
        assert upstream.requests() == []
        code, _ = await status(gw, "other-key")
        assert code == 200
        assert {r["headers"].get("x-consumer-username") for r in upstream.requests()} == {"other"}
        assert (await status(gw, "forged-key"))[0] == 401
    finally:
        gw.stop()


async def test_allow_list_matches_acls_not_consumer_groups(workdir, upstream):
    policy = {
        "consumer_groups": ["readers"],
        "consumers": {"alice": {"keys": ["alice-key"], "acls": ["readers", "auditors"]},
                      "bob": {"keys": ["bob-key"], "groups": ["readers"]}},
        "services": {"gh": {"url": upstream.url}},
        "routes": {"r": {"service": "gh", "paths": ["/mcp"], "key_auth": {"key_names": ["apikey"]},
                         "access": {"allow": ["readers"], "include_consumer_groups": False}}},
    }
    gw = Gateway(workdir, policy, intercept=False, name="gw-allow")
    try:
        upstream.reset()
        assert (await status(gw, "bob-key"))[0] == 403  # a consumer group, not an ACL group
        assert (await status(gw, "alice-key"))[0] == 200
        assert {r["headers"].get("x-consumer-groups") for r in upstream.requests()} == {"readers, auditors"}
    finally:
        gw.stop()
