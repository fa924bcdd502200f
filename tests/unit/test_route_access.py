"""Route access by consumer group (Kong's acl plugin), through the addon's hooks."""

import pytest

from mcpgw.policy.loader import PolicyError, load_policy_file
from tests.unit.test_addon import reverse_flow, through

POLICY = """
consumer_groups: [admin, developer]
consumers:
  admin-user: {groups: [admin], keys: [admin-api-key]}
  dev-user: {groups: [developer], keys: [dev-api-key]}
  guest: {}
services: {gh: {url: "https://api.githubcopilot.com/mcp"}}
routes:
  github-mcp:
    service: gh
    paths: [/github-mcp]
    key_auth: {anonymous: guest}
    access: ACCESS
"""


async def call(addon, key: str | None):
    f = reverse_flow()
    if key:
        f.request.headers["apikey"] = key
    return await through(addon, f)


async def test_allow_list(gateway_with):
    addon = gateway_with(POLICY.replace("ACCESS", "{allow: [admin]}"))
    allowed = await call(addon, "admin-api-key")
    assert allowed.response is None and allowed.request.headers["X-Consumer-Groups"] == "admin"
    for key in ("dev-api-key", None):  # a consumer outside the list, and the anonymous one
        refused = await call(addon, key)
        assert refused.response.status_code == 403
        assert refused.response.json() == {"message": "You cannot consume this service"}


async def test_deny_list_and_hidden_groups_header(gateway_with):
    addon = gateway_with(POLICY.replace("ACCESS", "{deny: [developer], hide_groups_header: true}"))
    assert (await call(addon, "dev-api-key")).response.status_code == 403
    admin = await call(addon, "admin-api-key")
    assert admin.response is None and "X-Consumer-Groups" not in admin.request.headers
    guest = await call(addon, None)  # not in a denied group
    assert guest.response is None


def test_access_needs_one_list_of_declared_groups(tmp_path):
    for access, message in (("{}", "exactly one of allow or deny"), ("{allow: [a], deny: [b]}", "exactly one"),
                            ("{deny: [develper]}", "group 'develper', which is not declared")):
        path = tmp_path / "p.yaml"
        path.write_text(POLICY.replace("ACCESS", access))
        with pytest.raises(PolicyError, match=message):
            load_policy_file(path)
