"""Trust-on-first-use pin files edited while the gateway runs: an edit is read, the pins the
gateway learned since it last wrote the file are kept, a half-saved or deleted file never
empties the store, and a store's version tells the list cache that its verdicts are stale."""

from __future__ import annotations

import json
import os

import pytest

from mcpgw.state import pins as pins_module
from mcpgw.state.pins import FilePinStore

A, B, C = ({"digest": d * 64} for d in "abc")


@pytest.fixture(autouse=True)
def recheck_now(monkeypatch):
    monkeypatch.setattr(pins_module, "RECHECK", 0.0)


def edit(path, routes: dict, stamp: int) -> None:
    """What an operator's editor does: the whole file rewritten (a distinct mtime, however fast)."""
    path.write_text(json.dumps({"routes": routes}))
    os.utime(path, ns=(stamp, stamp))


def stored(path) -> dict:
    return json.loads(path.read_text())["routes"]


def test_an_edit_is_read_and_a_removed_pin_is_gone(tmp_path):
    path = tmp_path / "pins.json"
    store = FilePinStore(path)
    store.put("r", "a", A)
    store.put("r", "b", B)
    store.flush()
    before = store.version
    edit(path, {"r": {"b": B}}, 10**9)  # the operator accepts a's change by removing its pin
    assert store.get("r", "a") is None and store.get("r", "b") == B
    assert store.version != before
    store.put("r", "a", C)  # the next list pins what a is now
    store.flush()
    assert stored(path) == {"r": {"a": C, "b": B}}


def test_pins_learned_meanwhile_are_not_lost(tmp_path):
    path = tmp_path / "pins.json"
    store = FilePinStore(path)
    store.put("r", "a", A)
    store.flush()
    store.put("r", "c", C)  # learned, not written yet
    edit(path, {"r": {}, "other": {"x": B}}, 10**9)
    assert store.get("r", "c") == C and store.get("r", "a") is None and store.get("other", "x") == B
    store.flush()
    assert stored(path) == {"r": {"c": C}, "other": {"x": B}}


def test_a_flush_merges_an_edit_it_has_not_seen_yet(tmp_path, monkeypatch):
    path = tmp_path / "pins.json"
    store = FilePinStore(path)
    store.put("r", "a", A)
    store.flush()
    monkeypatch.setattr(pins_module, "RECHECK", 3600.0)  # the store has not looked since
    edit(path, {"r": {"a": A, "b": B}}, 10**9)
    store.put("r", "c", C)
    store.flush()
    assert stored(path) == {"r": {"a": A, "b": B, "c": C}}


def test_a_half_saved_or_deleted_file_keeps_the_pins_held(tmp_path):
    path = tmp_path / "pins.json"
    store = FilePinStore(path)
    store.put("r", "a", A)
    store.flush()
    path.write_text('{"routes": {"r": {')  # the editor is still writing
    os.utime(path, ns=(10**9, 10**9))
    assert store.get("r", "a") == A
    store.put("r", "c", C)
    store.flush()
    assert path.read_text() == '{"routes": {"r": {'  # not overwritten: the operator's edit is theirs
    edit(path, {"r": {"b": B}}, 2 * 10**9)  # saved at last
    assert store.get("r", "a") is None and store.get("r", "b") == B and store.get("r", "c") == C
    path.unlink()
    assert store.get("r", "b") == B  # gone: nothing is trusted anew because of it


def test_a_store_that_only_reads_never_writes(tmp_path):
    path = tmp_path / "pins.json"
    edit(path, {"r": {"a": A}}, 10**9)
    store = FilePinStore(path)
    store.put("r", "a", B)  # already pinned: ignored
    store.flush()
    assert os.stat(path).st_mtime_ns == 10**9


# --- shared through Redis (a real server; two stores stand for two gateway processes) -----------

@pytest.fixture
def redis_settings():
    from mcpgw.state.settings import RedisSettings
    from tests.support.redis_server import RedisServer

    server = RedisServer().start()
    yield server, RedisSettings(host=server.host, port=server.port, timeout=1.0)
    server.stop()


async def test_a_pin_written_by_one_process_is_read_by_another(redis_settings):
    from mcpgw.state.pins_redis import RedisPinStore

    _, settings = redis_settings
    a, b = RedisPinStore(settings), RedisPinStore(settings)
    await a.sync("r")
    a.put("r", "t", A)
    a.flush()
    await a.drain()
    await b.sync("r")
    assert b.get("r", "t") == A
    before = b.version
    await b.sync("r")  # unchanged: nothing reloaded
    assert b.version == before


async def test_the_first_process_to_pin_wins_everywhere(redis_settings):
    from mcpgw.state.pins_redis import RedisPinStore

    _, settings = redis_settings
    a, b = RedisPinStore(settings), RedisPinStore(settings)
    for store in (a, b):
        await store.sync("r")
    a.put("r", "t", A)
    b.put("r", "t", B)  # b saw another definition first, at the same time
    a.flush()
    await a.drain()
    before = b.version
    b.flush()
    await b.drain()
    assert b.get("r", "t") == A and b.version != before  # b's lists are judged against a's pin now


async def test_redis_down_fails_sync_and_keeps_unwritten_pins(redis_settings):
    from mcpgw.state.pins_redis import RedisPinStore

    server, settings = redis_settings
    store = RedisPinStore(settings)
    await store.sync("r")
    server.stop()
    store.put("r", "t", A)
    store.flush()
    await store.drain()
    assert store.get("r", "t") == A and store._pending == {"r": {"t": A}}  # held here, retried with the next list
    with pytest.raises(Exception):
        await store.sync("r")
