"""A Redis that accepts connections and never answers (a hung server, a black-holing proxy):
a check waits one timeout, never two (no retry on a timeout), then the route's fault tolerance
decides, and the breaker keeps the next requests from waiting at all. Counted by connections
accepted, not by the clock."""

from __future__ import annotations

import socket
import threading

import pytest

from mcpgw.limits import backend
from mcpgw.limits.counters import Window
from mcpgw.state import redis_client
from mcpgw.state.settings import RedisSettings


@pytest.fixture
def silent():
    """A listener that accepts and holds every connection, answering nothing."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1], accepted
    listener.close()
    for c in accepted:
        c.close()


@pytest.fixture(autouse=True)
async def fresh():
    backend._down_until = 0.0
    backend.stats.redis_down = False
    yield
    await redis_client.close_all()
    backend._down_until = 0.0
    backend.stats.redis_down = False


async def test_a_hung_server_costs_one_timeout_then_the_breaker_skips_it(silent):
    port, accepted = silent
    redis = backend._Redis(RedisSettings(host="127.0.0.1", port=port, timeout=0.5), fault_tolerant=False)
    with pytest.raises(backend.Unavailable):
        await redis.check("k", (Window(5, 60),), 1, False, False)
    assert len(accepted) == 1  # one connection, one command, one timeout: not retried
    with pytest.raises(backend.Unavailable):  # within the breaker's interval: Redis is not asked
        await redis.check("k", (Window(5, 60),), 1, False, False)
    assert len(accepted) == 1
    tolerant = backend._Redis(RedisSettings(host="127.0.0.1", port=port, timeout=0.5), fault_tolerant=True)
    assert (await tolerant.check("k", (Window(5, 60),), 1, False, False)).allowed  # counted locally meanwhile
