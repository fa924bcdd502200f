"""Half-written policy files (policy/settle.py, store.py): a change is loaded only once settled."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from mcpgw.policy.store import PolicyStore

GOOD = """services:
  gh: {url: "https://api.githubcopilot.com/mcp"}
consumer_groups: [developer]
consumers:
  dev: {groups: [developer], keys: [dev-key]}
routes:
  gh:
    service: gh
    paths: [/gh]
    key_auth: {}
    acl:
      include_consumer_groups: true
      default_acl:
        - scope: tools
          deny: [developer]
"""


def has_acl(store: PolicyStore) -> bool:
    return store.current.policy.routes["gh"].acl is not None and bool(store.current.policy.routes["gh"].acl.default_acl)


def age(path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


@pytest.fixture
def settled_store(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    age(path, 10)
    store = PolicyStore()
    store.settle.interval = 0.3
    store.load(path)
    return store, path


def test_a_change_loads_only_after_staying_unchanged_for_the_interval(settled_store):
    store, path = settled_store
    path.write_text(GOOD.replace("/gh]", "/gh2]"))
    assert store.reload().startswith("settling")  # first look: the clock starts
    assert store.reload().startswith("settling")
    time.sleep(0.35)
    assert store.reload().startswith("loaded version 2")
    assert store.current.routes.match_gateway("/gh2") is not None


def test_a_file_still_growing_restarts_the_clock(settled_store):
    store, path = settled_store
    cut = GOOD.index("    acl:")
    path.write_text(GOOD[:cut])  # a valid policy without the ACL
    assert store.reload().startswith("settling")
    for _ in range(3):
        time.sleep(0.2)
        with open(path, "a") as f:  # the editor is still writing
            f.write("\n")
        assert store.reload().startswith("settling")
    assert store.current.version == 1 and has_acl(store)


def test_force_reload_never_skips_the_interval(settled_store):
    """mcp.reload and the secret refresh force a re-read; a file being written still waits."""
    store, path = settled_store
    path.write_text(GOOD[:GOOD.index("    acl:")])
    assert store.reload(force=True).startswith("settling")
    assert store.reload(True, keep_unchanged=True).startswith("settling")
    assert store.current.version == 1
    path.write_text(GOOD)  # back as it was: nothing to settle, force re-reads at once
    assert store.reload(force=True) == "unchanged (version 2)"


def test_an_explicit_load_waits_for_a_file_modified_just_now(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    store = PolicyStore()
    store.settle.interval = 0.3
    started = time.monotonic()
    store.load(path)
    assert time.monotonic() - started >= 0.25  # written just now: waited until it was 0.3 s old
    age(path, 10)
    started = time.monotonic()
    store.load(path)
    assert time.monotonic() - started < 0.2  # an old file loads at once


def test_an_explicit_load_refuses_a_file_that_never_settles(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    store = PolicyStore()
    store.settle.interval = 0.05
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            with open(path, "a") as f:
                f.write("\n")
            time.sleep(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with pytest.raises(Exception, match="kept changing while it was read"):
            store.load(path)
    finally:
        stop.set()
        thread.join()
    assert store.current is None and store.reloads_failed == 1


def test_the_watcher_never_loads_a_prefix_of_a_slowly_written_policy(settled_store):
    store, path = settled_store
    store.settle.interval = 0.6  # well above the writer's pauses, even on a busy machine
    lines = GOOD.replace("/gh]", "/gh-final]").splitlines(keepends=True)
    versions: list[tuple[int, bool]] = []

    async def scenario():
        watcher = asyncio.create_task(store.watch(0.05))
        try:
            with open(path, "w") as f:
                for line in lines:  # each pause is shorter than the interval, longer than the poll
                    f.write(line)
                    f.flush()
                    await asyncio.sleep(0.15)
                    versions.append((store.current.version, has_acl(store)))
            for _ in range(100):
                await asyncio.sleep(0.05)
                if store.current.version > 1:
                    break
        finally:
            watcher.cancel()

    asyncio.run(scenario())
    assert versions and all(v == (1, True) for v in versions)  # the old version, whole, all along
    assert store.current.version == 2 and has_acl(store)
    assert store.current.routes.match_gateway("/gh-final") is not None
