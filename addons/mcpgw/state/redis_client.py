"""One asyncio Redis client per distinct server setting, shared by rate limits and stores.

Clients are created lazily, on the event loop that uses them, and kept across policy reloads
that do not change the server: a reload must not drop every connection."""

from __future__ import annotations

import asyncio
import ssl as _ssl
from typing import Any

from .settings import RedisSettings

_clients: dict[tuple, Any] = {}


def _identity(s: RedisSettings) -> tuple:
    secret = lambda v: v.reveal() if v is not None else None  # noqa: E731
    return (s.host, s.port, s.database, secret(s.username), secret(s.password), s.ssl, s.ssl_verify,
            s.timeout, s.ssl_ca_file, s.server_name)


def client(settings: RedisSettings):
    """The client for `settings` on the running event loop (a client's connections belong to one loop)."""
    key = _identity(settings) + (asyncio.get_running_loop(),)
    found = _clients.get(key)
    if found is None:
        import redis.asyncio as aioredis  # imported on first use: a policy without Redis never loads it
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError

        kwargs: dict[str, Any] = dict(
            host=settings.host, port=settings.port, db=settings.database,
            username=key[3], password=key[4],
            socket_timeout=settings.timeout, socket_connect_timeout=settings.timeout,
            # one immediate retry on a connection error: a pooled connection to a server that restarted
            # fails once, and a new one works; none on a timeout, which would only double the wait
            # (redis-py's Retry retries timeouts too unless told which errors it retries)
            retry=Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)), health_check_interval=0,
        )
        if settings.ssl:
            kwargs.update(ssl_cert_reqs=_ssl.CERT_REQUIRED if settings.ssl_verify else _ssl.CERT_NONE,
                          ssl_check_hostname=settings.ssl_verify, ssl_ca_certs=settings.ssl_ca_file,
                          server_name=settings.server_name)
            # a pool of our connection class: redis-py has no setting for the TLS server name
            pool = aioredis.ConnectionPool(connection_class=_named_tls_connection(), **kwargs)
            found = _clients[key] = aioredis.Redis(connection_pool=pool)
        else:
            found = _clients[key] = aioredis.Redis(**kwargs)
    return found


_NamedTLS: Any = None


def _named_tls_connection():
    """redis-py's TLS connection, sending `server_name` (SNI) and checking the certificate
    against it instead of the host connected to, when one is set."""
    global _NamedTLS
    if _NamedTLS is None:
        from redis.asyncio.connection import SSLConnection

        class NamedTLSConnection(SSLConnection):
            def __init__(self, *, server_name: str | None = None, **kwargs):
                self.server_name = server_name
                super().__init__(**kwargs)

            def _connection_arguments(self):
                found = dict(super()._connection_arguments())
                if self.server_name:
                    found["server_hostname"] = self.server_name
                return found

        _NamedTLS = NamedTLSConnection
    return _NamedTLS


async def close_all() -> None:
    """Close the running loop's clients; forget those of other loops (their connections belong to
    a loop that is gone or not ours to use)."""
    loop = asyncio.get_running_loop()
    for key in list(_clients):
        found = _clients.pop(key)
        if key[-1] is loop:
            await found.aclose()
