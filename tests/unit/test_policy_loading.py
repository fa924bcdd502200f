import asyncio
import os

import pytest

from mcpgw.policy.loader import PolicyError, load_policy_file
from mcpgw.policy.secrets import Secret, SecretResolver
from mcpgw.policy.store import PolicyStore

GOOD = """
gateway:
  max_body_size: 2MiB
services:
  gh: {url: "http://127.0.0.1:8931/mcp"}
routes:
  gh: {service: gh, paths: [/github-mcp]}
"""


def write(tmp_path, text, name="policy.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_loads_and_parses_sizes(tmp_path):
    policy, digest, files = load_policy_file(write(tmp_path, GOOD))
    assert policy.gateway.max_body_size == 2 * 1024 * 1024
    assert len(digest) == 64 and files[0].name == "policy.yaml"


def test_errors_name_file_field_and_line(tmp_path):
    p = write(tmp_path, GOOD.replace("paths: [/github-mcp]", "paths: [/github-mcp], strip_paht: true"))
    with pytest.raises(PolicyError) as e:
        load_policy_file(p)
    msg = str(e.value)
    assert str(p) in msg and "routes.gh.strip_paht" in msg and "unknown field" in msg and "(line 7)" in msg


def test_duplicate_yaml_keys_are_errors(tmp_path):
    p = write(tmp_path, GOOD + "routes:\n  x: {service: gh, paths: [/x]}\n")
    with pytest.raises(PolicyError, match="duplicate key 'routes'"):
        load_policy_file(p)


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(PolicyError, match="line 3, column 1: invalid YAML"):
        load_policy_file(write(tmp_path, "services:\n  - [unclosed\n"))
    with pytest.raises(PolicyError, match="not found"):
        load_policy_file(tmp_path / "nope.yaml")


def test_secret_references(tmp_path, monkeypatch):
    monkeypatch.setenv("MCPGW_TEST_SECRET", "s3cret")
    monkeypatch.setenv("MCPGW_TEST_KONG", "kong-value")
    (tmp_path / "tok").write_text("from-file\n")
    r = SecretResolver(tmp_path)
    assert r.resolve("{env://MCPGW_TEST_SECRET}").reveal() == "s3cret"
    assert r.resolve("{vault://env/mcpgw-test-kong}").reveal() == "kong-value"
    assert r.resolve("{file://tok}").reveal() == "from-file"
    assert r.resolve(f"{{file://{tmp_path / 'tok'}}}").reveal() == "from-file"
    assert r.resolve("plain").reveal() == "plain"
    assert "s3cret" not in repr(r.resolve("{env://MCPGW_TEST_SECRET}"))
    assert tmp_path / "tok" in r.files
    with pytest.raises(ValueError, match="MCPGW_MISSING is not set"):
        r.resolve("{env://MCPGW_MISSING}")
    with pytest.raises(ValueError, match="unknown secret reference scheme"):
        r.resolve("{aws://x}")
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")


def test_store_keeps_last_good_version(tmp_path, caplog):
    p = write(tmp_path, GOOD)
    store = PolicyStore()
    first = store.load(p)
    assert store.reload() == "unchanged"
    p.write_text("routes: [broken")
    assert store.reload().startswith("rejected")
    assert store.current is first and store.reloads_failed == 1
    assert store.reload() == "unchanged"  # the same bad content is not retried every poll
    p.write_text(GOOD.replace("/github-mcp", "/gh2"))
    assert store.reload().startswith("loaded version 2")
    assert store.current.version == 2 and "gh" in store.current.routes.routes


def test_store_watch_picks_up_changes(tmp_path):
    p = write(tmp_path, GOOD)
    store = PolicyStore()
    store.load(p)

    async def scenario():
        task = asyncio.create_task(store.watch(0.05))
        p.write_text(GOOD.replace("/github-mcp", "/gh3"))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if store.current.version == 2:
                break
        task.cancel()

    asyncio.run(scenario())
    assert store.current.version == 2
    assert store.current.routes.match_gateway("/gh3") is not None


def test_shipped_policies_load():
    root = os.path.join(os.path.dirname(__file__), "..", "..", "policies")
    for name in os.listdir(root):
        if name.endswith(".yaml"):
            load_policy_file(os.path.join(root, name))
