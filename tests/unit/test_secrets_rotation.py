"""Rotating secrets: the policy's env file, file secrets, and gateway.secret_refresh, through the
real policy store. A request reads one snapshot, so it sees the old or the new value, and a
value that cannot be resolved (missing, empty) never replaces a good one."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
import yaml

from mcpgw.policy import secrets
from mcpgw.policy.loader import PolicyError
from mcpgw.policy.secrets import Backend, SecretError, SecretResolver, parse_env_file
from mcpgw.policy.store import PolicyStore


def write_policy(tmp_path: Path, value: str, **gateway) -> Path:
    policy = {
        "gateway": gateway,
        "services": {"up": {"url": "https://upstream.example/mcp"}},
        "routes": {"swap": {"service": "up", "paths": ["/swap"],
                            "credentials": {"mode": "inject", "allow_anonymous": True,
                                            "add": {"headers": [f"Authorization:Bearer {value}"]}}}},
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def injected(store: PolicyStore) -> str:
    (_, value), = store.current.policy.routes["swap"].credentials.add.headers
    return value.reveal()


def replace_file(path: Path, text: str) -> None:
    """Write a new version atomically, as Kubernetes secret mounts and config tools do."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# -- the env file ----------------------------------------------------------------------------


def test_env_file_syntax():
    env = parse_env_file(
        "# comment\n\nexport A=plain\nB = spaced value  # trailing comment\nC='single # kept'\n"
        'D="double \\"quoted\\"\\nline"\nE=with#hash\nF=\n', "x.env")
    assert env == {"A": "plain", "B": "spaced value", "C": "single # kept", "D": 'double "quoted"\nline',
                   "E": "with#hash", "F": ""}


@pytest.mark.parametrize("text, message", [
    ("just-a-secret-value\n", "x.env, line 1: expected NAME=value"),
    ("A=1\nA=2\n", "x.env, line 2: A is already set on line 1"),
    ('A="open-secret\n', "x.env, line 1: unterminated double quote"),
])
def test_env_file_errors_name_the_line_not_the_content(text, message):
    with pytest.raises(SecretError) as e:
        parse_env_file(text, "x.env")
    assert str(e.value) == message


def test_env_file_wins_over_the_process_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("UPSTREAM_TOKEN", "from-process")
    (tmp_path / "secrets.env").write_text("UPSTREAM_TOKEN=from-file\n")
    store = PolicyStore()
    store.load(write_policy(tmp_path, "{env://UPSTREAM_TOKEN}", env_file="secrets.env"))
    assert injected(store) == "Bearer from-file"
    assert tmp_path / "secrets.env" in store.current.files  # watched like the policy
    # Kong's env vault reads the same place.
    replace_file(tmp_path / "policy.yaml", (tmp_path / "policy.yaml").read_text().replace(
        "{env://UPSTREAM_TOKEN}", "{vault://env/upstream-token}"))
    store.reload()
    assert injected(store) == "Bearer from-file"


def test_missing_env_file_or_variable_is_a_load_error_naming_the_reference(tmp_path):
    with pytest.raises(PolicyError, match="env file .*missing.env does not exist"):
        PolicyStore().load(write_policy(tmp_path, "{env://UPSTREAM_TOKEN}", env_file="missing.env"))
    (tmp_path / "secrets.env").write_text("OTHER=1\n")
    with pytest.raises(PolicyError, match=r"cannot resolve \{env://MCPGW_TEST_NOPE\}: environment variable "
                                          r"MCPGW_TEST_NOPE is not set \(nor in env file .*secrets.env\)"):
        PolicyStore().load(write_policy(tmp_path, "{env://MCPGW_TEST_NOPE}", env_file="secrets.env"))


def test_rotating_the_env_file_swaps_and_an_empty_value_keeps_the_old(tmp_path):
    env = tmp_path / "secrets.env"
    env.write_text("UPSTREAM_TOKEN=old-token\nUNUSED=1\n")
    store = PolicyStore()
    first = store.load(write_policy(tmp_path, "{env://UPSTREAM_TOKEN}", env_file="secrets.env"))

    replace_file(env, "UPSTREAM_TOKEN=old-token\nUNUSED=2\n")
    assert store.reload() == f"unchanged (version {first.version + 1})"  # nothing the policy uses changed
    assert injected(store) == "Bearer old-token" and store.current.digest == first.digest

    replace_file(env, "UPSTREAM_TOKEN=\n")
    assert store.reload().startswith("rejected")
    assert injected(store) == "Bearer old-token"  # never an empty credential

    replace_file(env, "UPSTREAM_TOKEN=new-token\n")
    assert store.reload().startswith("loaded version")
    assert injected(store) == "Bearer new-token" and store.current.digest != first.digest


def test_rotating_a_file_secret(tmp_path):
    token = tmp_path / "token"
    token.write_text("file-token-1\n")  # the trailing newline is not part of the secret
    store = PolicyStore()
    store.load(write_policy(tmp_path, "{file://token}"))
    assert injected(store) == "Bearer file-token-1"
    replace_file(token, "file-token-2\n")
    store.reload()
    assert injected(store) == "Bearer file-token-2"
    token.unlink()
    assert "does not exist" in store.reload()
    assert injected(store) == "Bearer file-token-2"


def test_a_file_rewritten_while_it_is_read_is_read_again(tmp_path, monkeypatch):
    """The writer finishes right after the gateway read the content: what was read may be a mix,
    so it is not loaded, and the next poll must still see a change, or the stale value would stay
    until some other change."""
    token = tmp_path / "token"
    token.write_text("first")
    racing_write: list[str] = []

    class WriterFinishesAfterRead(secrets.FileBackend):
        scheme = "racy"

        def read(self, location: str) -> str:
            value = super().read(location)
            if racing_write:
                token.write_text(racing_write.pop())
            return value

    monkeypatch.setitem(secrets.BACKENDS, "racy", WriterFinishesAfterRead)
    store = PolicyStore()
    store.load(write_policy(tmp_path, "{racy://token}"))
    token.write_text("intermediate")
    racing_write.append("final")
    assert store.reload() == "settling: a policy file is still changing"
    assert injected(store) == "Bearer first"
    assert store.reload().startswith("loaded version")
    assert injected(store) == "Bearer final"
    assert store.reload() == "unchanged"


def test_concurrent_readers_see_old_or_new_never_anything_else(tmp_path):
    env = tmp_path / "secrets.env"
    env.write_text("UPSTREAM_TOKEN=token-v0\n")
    store = PolicyStore()
    store.load(write_policy(tmp_path, "{env://UPSTREAM_TOKEN}", env_file="secrets.env"))
    seen: set[str] = set()
    done = threading.Event()

    def read_like_requests():
        while not done.is_set():
            seen.add(injected(store))
            time.sleep(0)

    readers = [threading.Thread(target=read_like_requests) for _ in range(3)]
    for r in readers:
        r.start()
    written = ["token-v0"]
    for i in range(1, 16):
        if i % 5 == 0:  # now and then a broken rotation: an empty value
            replace_file(env, "UPSTREAM_TOKEN=\n")
        else:
            written.append(f"token-v{i}")
            replace_file(env, f"UPSTREAM_TOKEN={written[-1]}\n")
        store.reload()
    done.set()
    for r in readers:
        r.join()
    assert seen <= {f"Bearer {v}" for v in written} and len(seen) > 1
    assert injected(store) == f"Bearer {written[-1]}"


# -- gateway.secret_refresh --------------------------------------------------------------------


class MemoryBackend(Backend):
    """A secret manager without files (like HashiCorp Vault): only re-resolving notices a change."""

    scheme = "memory"
    values: dict[str, str] = {}
    reads = 0

    def read(self, location: str) -> str:
        MemoryBackend.reads += 1
        if not self.values.get(location):
            raise SecretError(f"{location} is not in the secret manager")
        return self.values[location]


def test_a_new_backend_is_one_small_class(monkeypatch):
    monkeypatch.setitem(secrets.BACKENDS, "memory", MemoryBackend)
    monkeypatch.setattr(MemoryBackend, "values", {"konnect/token": "vault-token"})
    assert SecretResolver().resolve_text("Bearer {memory://konnect/token}").reveal() == "Bearer vault-token"


def test_secret_refresh_picks_up_changes_within_the_interval(tmp_path, monkeypatch):
    monkeypatch.setitem(secrets.BACKENDS, "memory", MemoryBackend)
    monkeypatch.setattr(MemoryBackend, "values", {"token": "refresh-1"})
    store = PolicyStore()
    first = store.load(write_policy(tmp_path, "{memory://token}", secret_refresh=0.3))

    async def scenario() -> float:
        watcher = asyncio.create_task(store.watch(0.05))
        try:
            await asyncio.sleep(1.0)  # several refreshes, nothing changed
            assert store.current is first  # an unchanged digest swaps nothing
            reads_while_idle = MemoryBackend.reads
            MemoryBackend.values["token"] = ""  # a broken secret manager answer: keep the old value
            await asyncio.sleep(0.5)
            assert injected(store) == "Bearer refresh-1"
            MemoryBackend.values["token"] = "refresh-2"
            changed = time.monotonic()
            while injected(store) != "Bearer refresh-2":
                await asyncio.sleep(0.02)
            assert reads_while_idle >= 3
            return time.monotonic() - changed
        finally:
            watcher.cancel()

    delay = asyncio.run(scenario())
    assert delay <= 0.3 + 0.2  # the interval, plus one poll and some slack
    assert store.current.version == first.version + 1


def test_without_secret_refresh_only_file_changes_reload(tmp_path, monkeypatch):
    monkeypatch.setitem(secrets.BACKENDS, "memory", MemoryBackend)
    monkeypatch.setattr(MemoryBackend, "values", {"token": "static-1"})
    store = PolicyStore()
    store.load(write_policy(tmp_path, "{memory://token}"))
    MemoryBackend.values["token"] = "static-2"
    assert store.reload() == "unchanged"
    assert injected(store) == "Bearer static-1"
