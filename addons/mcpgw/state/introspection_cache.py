"""OAuth introspection answers shared through Redis (`gateway.state.backend: redis`), so that a
token introspected by one gateway process is not introspected again by the others.

The introspector keeps its in-process cache in front of this one and asks here on a miss, inside
its one-call-per-token task. Keys are `<prefix>:introspect:{<sha256 of the token>}`: the token is
never written; the value is the answer (`active` claims, or null for an inactive token) with its
expiry, which is also the key's. The answers carry the token's claims (subject, scopes, groups):
the Redis server must be as private as the authorization server's answers.

A cache: a Redis error is logged (once until Redis answers again) and the token is introspected
as if nothing were shared; it never lets a token through."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Callable

from . import redis_client

log = logging.getLogger("mcpgw.state")

_policy: Callable[[], Any] | None = None  # () -> the active Policy, set by the addon
_pending: set[asyncio.Task] = set()
_failing = False


def use_policy(source: Callable[[], Any]) -> None:
    global _policy
    _policy = source


def _target() -> tuple[Any, str] | None:
    policy = _policy() if _policy is not None else None
    state = policy.gateway.state if policy is not None else None
    if state is None or state.backend != "redis":
        return None
    return redis_client.client(state.redis), state.redis.key_prefix


def _key(prefix: str, digest: bytes) -> str:
    return f"{prefix}:introspect:{{{digest.hex()}}}"


def _failed(e: Exception) -> None:
    global _failing
    if not _failing:
        log.warning("introspection cache: Redis unreachable (%s); introspecting without it", type(e).__name__)
    _failing = True


async def get(digest: bytes) -> tuple[float, dict | None] | None:
    """(expires at, claims or None for an inactive token), or None when nothing usable is shared."""
    global _failing
    target = _target()
    if target is None:
        return None
    client, prefix = target
    try:
        raw = await client.get(_key(prefix, digest))
    except Exception as e:  # a cache: fall through to introspection
        _failed(e)
        return None
    _failing = False
    if raw is None:
        return None
    try:
        value = json.loads(raw)
        expires_at, claims = float(value["expires_at"]), value["claims"]
    except (ValueError, KeyError, TypeError):
        return None
    if expires_at <= time.time() or not (claims is None or isinstance(claims, dict)):
        return None
    return expires_at, claims


def put(digest: bytes, expires_at: float, claims: dict | None) -> None:
    """Share an answer until `expires_at` (Unix time); written in the background."""
    target = _target()
    ttl_ms = int((expires_at - time.time()) * 1000)
    if target is None or ttl_ms <= 0:
        return
    client, prefix = target
    payload = json.dumps({"expires_at": expires_at, "claims": claims}, separators=(",", ":"))

    async def write() -> None:
        try:
            await client.set(_key(prefix, digest), payload, px=ttl_ms)
        except Exception as e:
            _failed(e)

    task = asyncio.get_running_loop().create_task(write())
    _pending.add(task)
    task.add_done_callback(_pending.discard)
