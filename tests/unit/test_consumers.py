"""Consumers, consumer groups and API keys in the policy (identity/consumers.py)."""

from __future__ import annotations

import hashlib

import pytest

from mcpgw.identity.consumers import ConsumerIndex, Identity, consumer_index
from mcpgw.policy.derived import PerPolicy
from mcpgw.policy.loader import PolicyError, load_policy_file
from mcpgw.policy.models import Policy

SERVICES = {"services": {"gh": {"url": "http://127.0.0.1:8931/mcp"}},
            "routes": {"gh": {"service": "gh", "paths": ["/github-mcp"]}}}


def policy(consumers: dict, groups=("admin", "developer")) -> Policy:
    return Policy.model_validate({"consumer_groups": list(groups), "consumers": consumers, **SERVICES})


def sha256(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def test_keys_in_plain_text_as_hash_and_as_references(tmp_path, monkeypatch):
    monkeypatch.setenv("MCPGW_TEST_ENV_KEY", "env-key")
    monkeypatch.setenv("MCPGW_TEST_VAULT_KEY", "vault-key")
    (tmp_path / "file-key").write_text("file-key\n")
    p = tmp_path / "policy.yaml"
    p.write_text(f"""
consumer_groups: [admin]
consumers:
  plain: {{keys: [plain-key]}}
  hashed: {{keys: ["{sha256('hashed-key')}"]}}
  from-env: {{keys: ["{{env://MCPGW_TEST_ENV_KEY}}"]}}
  from-vault: {{keys: ["{{vault://env/mcpgw-test-vault-key}}"]}}
  from-file: {{keys: ["{{file://file-key}}"], groups: [admin]}}
services:
  gh: {{url: "http://127.0.0.1:8931/mcp"}}
routes:
  gh: {{service: gh, paths: [/github-mcp]}}
""")
    loaded, _, files = load_policy_file(p)
    index = ConsumerIndex(loaded)
    assert index.by_key("plain-key") == "plain"
    assert index.by_key("hashed-key") == "hashed"
    assert index.by_key("env-key") == "from-env"
    assert index.by_key("vault-key") == "from-vault"
    assert index.by_key("file-key") == "from-file"
    assert index.by_key("other") is None and index.by_key("") is None
    assert tmp_path / "file-key" in files  # a changed key file reloads the policy


def test_only_digests_are_kept():
    c = policy({"dev-user": {"keys": ["dev-api-key"]}}).consumers["dev-user"]
    assert c.keys[0].digest == hashlib.sha256(b"dev-api-key").digest()
    assert "dev-api-key" not in repr(c) and "dev-api-key" not in repr(c.keys)


def test_missing_env_secret_is_a_load_error_naming_the_reference(tmp_path, monkeypatch):
    monkeypatch.delenv("MCPGW_TEST_UNSET_KEY", raising=False)
    p = tmp_path / "policy.yaml"
    p.write_text("""
consumers:
  dev-user: {keys: ["{env://MCPGW_TEST_UNSET_KEY}"]}
services: {gh: {url: "http://127.0.0.1:8931/mcp"}}
routes: {gh: {service: gh, paths: [/github-mcp]}}
""")
    with pytest.raises(PolicyError) as e:
        load_policy_file(p)
    assert "consumers.dev-user.keys[0]" in str(e.value)
    assert "{env://MCPGW_TEST_UNSET_KEY}" in str(e.value) and "is not set" in str(e.value)


@pytest.mark.parametrize("consumers, expected", [
    ({"a": {"keys": [""]}}, "must not be empty"),
    ({"a": {"keys": ["k"]}, "b": {"keys": ["k"]}}, "share an API key"),
    ({"a": {"keys": ["k"]}, "b": {"keys": [sha256("k")]}}, "share an API key"),
    ({"a": {"groups": ["ops"]}}, "group 'ops', which is not declared"),
    ({"a": {"id": "1"}, "b": {"id": "1"}}, "same id '1'"),
    ({"a": {"custom_id": "x"}, "b": {"custom_id": "x"}}, "same custom_id 'x'"),
    ({"a": {"id": " "}}, "at least 1 character"),
    ({"a": {"key": "k"}}, "Extra inputs"),
])
def test_invalid_consumers_are_refused(consumers, expected):
    with pytest.raises(ValueError, match=expected):
        policy(consumers)


def test_groups_may_be_a_list_or_a_mapping():
    as_list = policy({}, groups=["admin", {"name": "developer", "description": "read-only tools"}])
    assert set(as_list.consumer_groups) == {"admin", "developer"}
    assert as_list.consumer_groups["developer"].description == "read-only tools"


def test_lookups_by_username_id_and_custom_id_in_the_order_given():
    index = ConsumerIndex(policy({
        "alice": {"id": "c-1", "custom_id": "okta|42", "groups": ["admin", "developer"]},
        "bob": {"custom_id": "alice"},  # another consumer's username as custom_id: the order decides
    }))
    assert index.find("alice") == "alice"
    assert index.find("c-1") == "alice"
    assert index.find("okta|42") is None  # custom_id is not looked at unless asked for
    assert index.find("okta|42", ["custom_id"]) == "alice"
    assert index.find("alice", ["custom_id", "username"]) == "bob"
    assert index.find("alice", ["username", "custom_id"]) == "alice"
    assert index.identity("alice", "key-auth") == Identity("alice", "c-1", "okta|42", ("admin", "developer"), "key-auth")
    assert index.identity("alice", "key-auth").subjects() == ("alice", "c-1", "okta|42")
    assert {"alice", "c-1", "okta|42", "bob"} <= index.subjects


def test_index_is_built_once_per_policy_version():
    built = []
    cache = PerPolicy(lambda p: built.append(p) or len(built), keep=2)
    first, second, third = (policy({"a": {"keys": [f"k{i}"]}}) for i in range(3))
    assert first == policy({"a": {"keys": ["k0"]}}) and first is not policy({"a": {"keys": ["k0"]}})
    assert [cache(first), cache(first), cache(second), cache(first)] == [1, 1, 2, 1]
    cache(third)  # evicts the least recently used: second
    assert cache(first) == 1 and cache(second) == 4
    assert consumer_index(first) is consumer_index(first)
    assert consumer_index(first).by_key("k0") == "a" and consumer_index(second).by_key("k0") is None
