"""Tokens the gateway obtained by RFC 8693 token exchange, shared through Redis when the active
policy says `gateway.state.backend: redis`, so that a caller's token exchanged by one gateway
process is not exchanged again by the others.

Entries are found by a `CacheKey` the exchange computes from its settings and the caller's
token: `name`, a digest, is the only part written (`<prefix>:exchange:{<name>}`); `secret`, a
second digest of the same material, never leaves the process. The value in Redis is sealed with
AES-GCM under `secret` (the key name as associated data), so whoever reads Redis, or copies a
value under another key, has nothing usable: opening it takes the caller's own token. Values
carry their expiry, which is also the key's.

In front of Redis each process keeps its own `MemoryTokenCache` (handed over across script
reloads, state/handover.py). A cache: a Redis error is logged (once until Redis answers again)
and the token is exchanged as if nothing were shared; it never lets a request through unchecked."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import redis_client
from .tokens import MemoryTokenCache

log = logging.getLogger("mcpgw.state")

_NONCE = 12


@dataclass(frozen=True, slots=True)
class CacheKey:
    name: str  # hex digest: the entry's name in every store
    secret: bytes  # 32 bytes: seals the value in a shared store; never stored


def seal(key: CacheKey, stored_as: str, value: str, expires_at: float) -> bytes:
    nonce = os.urandom(_NONCE)
    plain = json.dumps([expires_at, value], separators=(",", ":")).encode()
    return nonce + AESGCM(key.secret).encrypt(nonce, plain, stored_as.encode())


def unseal(key: CacheKey, stored_as: str, raw: bytes) -> tuple[float, str] | None:
    """(expires at, value), or None for anything that does not open under this key."""
    try:
        plain = AESGCM(key.secret).decrypt(raw[:_NONCE], raw[_NONCE:], stored_as.encode())
        expires_at, value = json.loads(plain)
    except (InvalidTag, ValueError, TypeError):
        return None
    if not isinstance(value, str) or not isinstance(expires_at, (int, float)):
        return None
    return float(expires_at), value


class SelectedExchangeCache:
    """This process's memory, then Redis when the active policy's state backend is redis. Memory
    keeps values as they are; Redis keeps `encode(value)`, sealed, read back with `decode`."""

    def __init__(self, memory: MemoryTokenCache, policy: Callable[[], Any],
                 encode: Callable[[Any], str] = str, decode: Callable[[str], Any] = str):
        self.memory = memory
        self._policy = policy  # () -> the active Policy or None
        self._encode, self._decode = encode, decode
        self._failing = False

    def _redis(self) -> tuple[Any, str] | None:
        policy = self._policy()
        state = policy.gateway.state if policy is not None else None
        if state is None or state.backend != "redis":
            return None
        return redis_client.client(state.redis), f"{state.redis.key_prefix}:exchange:{{%s}}"

    def _failed(self, e: Exception) -> None:
        if not self._failing:
            log.warning("token exchange cache: Redis unreachable (%s); exchanging without it", type(e).__name__)
        self._failing = True

    async def get(self, key: CacheKey) -> Any:
        found = await self.memory.get(key.name)
        target = self._redis() if found is None else None
        if target is None:
            return found
        client, pattern = target
        stored_as = pattern % key.name
        try:
            raw = await client.get(stored_as)
        except Exception as e:  # a cache: the caller exchanges the token instead
            self._failed(e)
            return None
        self._failing = False
        opened = unseal(key, stored_as, raw) if raw is not None else None
        if opened is None:
            if raw is not None:
                log.warning("token exchange cache: an entry in Redis does not open under its key; ignored")
            return None
        expires_at, text = opened
        ttl = expires_at - time.time()
        value = self._decode(text) if ttl > 0 else None
        if value is None:
            return None
        await self.memory.put(key.name, value, ttl)
        return value

    async def put(self, key: CacheKey, value: Any, expires_at: float) -> None:
        """Keep `value` until `expires_at` (Unix time) here and, with the redis backend, in Redis."""
        ttl = expires_at - time.time()
        if ttl <= 0:
            return
        await self.memory.put(key.name, value, ttl)
        target = self._redis()
        if target is None:
            return
        client, pattern = target
        stored_as = pattern % key.name
        try:
            # Awaited, once per exchange: another gateway asked right after this answer finds it.
            sealed = seal(key, stored_as, self._encode(value), expires_at)
            await client.set(stored_as, sealed, px=max(1, int(ttl * 1000)))
        except Exception as e:
            self._failed(e)
        else:
            self._failing = False
