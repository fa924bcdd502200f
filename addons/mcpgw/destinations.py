"""Intercept mode: which governed origin a request is for, decided on where it goes, not on its name.

A service is reachable under names the policy never lists: its IP address, a CNAME, a second host
name, `localhost` for `127.0.0.1`, spellings the resolver accepts (`127.1`, a trailing dot,
IPv6 forms). So a request's destination (the host and port mitmproxy will connect to:
`flow.request.host/port`, the CONNECT target inside a tunnel, never the Host header or SNI) is
compared with the services' addresses, resolved asynchronously and refreshed on a TTL. A request
whose destination is a service's address and port, same scheme, is that service's origin.

Work per request stays small: a service's own name is a dict lookup; hosts on a port no governed
service uses are never resolved; other names are resolved once per TTL (shared by concurrent
requests). A name that cannot be resolved on a governed port is refused (502), and so is every
non-literal destination on a port whose service never resolved (503): the gateway cannot tell
whether they are governed.

The check is also made where mitmproxy connects, against DNS rebinding (a name resolving to
another server when checked and to the service when connected): a pass-through connection to a
name on a governed port is pinned to the address that was checked, and refused if that address
is governed. A raw (non-HTTP) tunnel to a governed destination is refused outright: nothing it
carries would be seen by the pipeline.

Loopback and unspecified addresses (127.0.0.0/8, ::1, 0.0.0.0, ::) all reach a local server, so
they count as one address."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from mitmproxy import ctx as mitmproxy_ctx, http
from mitmproxy.proxy import commands, events, layer, layers
from mitmproxy.proxy.mode_specs import ReverseMode

from . import headers
from .routing import Origin, literal_host

log = logging.getLogger("mcpgw.destinations")

REQUEST_TTL = 10.0  # seconds a request host's addresses are trusted
SERVICE_TTL = 30.0  # seconds between refreshes of the services' addresses (the last good set stays meanwhile)
FAILURE_TTL = 5.0  # seconds a failed lookup is remembered (no resolver storm from one bad name)
LOOKUP_TIMEOUT = 5.0
CACHE_SIZE = 4096
LOCAL = "local"  # the one "address" of every loopback and unspecified address

Lookup = Callable[[str], Awaitable[list[str]]]


class Unresolvable(Exception):
    """The destination cannot be placed; `status` and `str(e)` are what the client is told."""

    def __init__(self, message: str, status: int = 502):
        super().__init__(message)
        self.status = status


def normal_address(address: str) -> str:
    """One spelling per reachable address: IPv4-mapped IPv6 as IPv4, every local address as LOCAL."""
    ip = ipaddress.ip_address(address.partition("%")[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return LOCAL if ip.is_loopback or ip.is_unspecified else str(ip)


def ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]").partition("%")[0]))
    except ValueError:
        return None


async def system_lookup(host: str) -> list[str]:
    """The addresses getaddrinfo gives, in its order (the order a connection tries them)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


@dataclass(frozen=True, slots=True)
class Addresses:
    raw: tuple[str, ...]  # as the resolver gave them, in its order: what a pinned connection uses
    normal: frozenset[str]  # normal_address of each: what is compared


class Resolver:
    """Asynchronous host lookups with a bounded TTL cache, failures included; concurrent lookups
    of one name share one query. `lookup` is the system resolver unless a test supplies another."""

    def __init__(self, lookup: Lookup = system_lookup, ttl: float = REQUEST_TTL, failure_ttl: float = FAILURE_TTL,
                 timeout: float = LOOKUP_TIMEOUT, size: int = CACHE_SIZE):
        self._lookup, self.ttl, self.failure_ttl, self.timeout, self.size = lookup, ttl, failure_ttl, timeout, size
        self._cache: OrderedDict[str, tuple[float, Addresses | str]] = OrderedDict()  # host -> (expiry, result or error)
        self._pending: dict[str, asyncio.Future[Addresses]] = {}

    def cached(self, host: str) -> Addresses | None:
        """A fresh cached result (raises Unresolvable for a fresh failure), or None."""
        entry = self._cache.get(host)
        if entry is None or entry[0] < time.monotonic():
            return None
        if isinstance(entry[1], str):
            raise Unresolvable(entry[1])
        return entry[1]

    async def resolve(self, host: str, *, fresh: bool = False) -> Addresses:
        literal = ip_literal(host)
        if literal is not None:
            return Addresses((literal,), frozenset({normal_address(literal)}))
        if not fresh and (found := self.cached(host)) is not None:
            return found
        pending = self._pending.get(host)
        if pending is None:
            pending = self._pending[host] = asyncio.ensure_future(self._query(host))
            pending.add_done_callback(lambda f: (self._pending.pop(host, None), _retrieve(f)))
        return await asyncio.shield(pending)

    async def _query(self, host: str) -> Addresses:
        try:
            raw = await asyncio.wait_for(self._lookup(host), self.timeout)
            found = Addresses(tuple(raw), frozenset(normal_address(a) for a in raw))
            if not raw:
                raise OSError("no address")
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            message = f"The gateway cannot resolve {host!r} ({type(e).__name__}), so it cannot tell whether its " \
                      "policy governs it; nothing was forwarded"
            self._store(host, message, self.failure_ttl)
            raise Unresolvable(message) from None
        self._store(host, found, self.ttl)
        return found

    def _store(self, host: str, value: Addresses | str, ttl: float) -> None:
        self._cache[host] = (time.monotonic() + ttl, value)
        self._cache.move_to_end(host)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)


@dataclass(frozen=True, slots=True)
class _Table:
    """The governed addresses of one policy version, as resolved at one time."""

    version: int
    generation: int
    by_address: dict[tuple[str, int, str], tuple[Origin, ...]]  # (scheme, port, normal address) -> origins, file order
    siblings: dict[Origin, tuple[Origin, ...]]  # origin -> itself, then the other origins at one of its addresses
    unknown: frozenset[tuple[str, int]]  # (scheme, port) of services never resolved: nothing else there can be placed
    hosts: frozenset[tuple[str, int]]  # (literal host, port) of every service


PASS, PIN, REFUSE = "pass", "pin", "refuse"


class Destinations:
    """Child addon of the gateway: the services' addresses (per policy version, refreshed in the
    background), the request-time lookup, and the checks where mitmproxy connects."""

    def __init__(self, store, resolver: Resolver | None = None, service_ttl: float = SERVICE_TTL):
        self.store = store
        self.resolver = resolver or Resolver()
        self.service_ttl = service_ttl
        self._service_addresses: dict[str, Addresses] = {}  # service host -> last good addresses
        self._generation = 0  # bumped whenever a service's addresses change
        self._current: _Table | None = None
        self._refreshed: tuple[int, float] = (0, 0.0)  # (policy version, time.monotonic()) of the last refresh
        self._refreshing: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._pinned: dict[str, tuple[str, int]] = {}  # server connection id -> the address it was asked for

    # -- the services' addresses -------------------------------------------------------------

    async def refresh(self, snap) -> None:
        """Resolve every service host of `snap` now; a failure keeps the last good addresses."""
        hosts = sorted({host for _, host, _ in snap.routes.origins})
        results = await asyncio.gather(*(self.resolver.resolve(h, fresh=True) for h in hosts), return_exceptions=True)
        for host, result in zip(hosts, results):
            if isinstance(result, Addresses):
                if self._service_addresses.get(host) != result:
                    self._service_addresses[host] = result
                    self._generation += 1
            elif isinstance(result, Unresolvable):
                kept = "keeping its last known addresses" if host in self._service_addresses else \
                    "other names on its port are refused until it resolves"
                log.warning("service host %s does not resolve; %s", host, kept)
            else:
                raise result
        self._refreshed = (snap.version, time.monotonic())

    def _table_now(self, snap) -> _Table:
        """The table from the addresses known now; starts a background refresh when one is due."""
        version, at = self._refreshed
        if (version != snap.version or time.monotonic() - at >= self.service_ttl) and \
                (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.ensure_future(self.refresh(snap))
            self._refreshing.add_done_callback(_retrieve)
        table = self._current
        if table is None or table.version != snap.version or table.generation != self._generation:
            table = self._current = self._build(snap)
        return table

    async def _table(self, snap) -> _Table:
        """_table_now, after waiting for a refresh under way if a service was never resolved."""
        table = self._table_now(snap)
        if table.unknown and self._refreshing is not None and not self._refreshing.done():
            await asyncio.shield(self._refreshing)
            table = self._table_now(snap)
        return table

    def _build(self, snap) -> _Table:
        by_address: dict[tuple[str, int, str], list[Origin]] = {}
        unknown = set()
        for origin in snap.routes.origins:
            scheme, host, port = origin
            found = self._service_addresses.get(host)
            if found is None:
                unknown.add((scheme, port))
                continue
            for address in found.normal:
                by_address.setdefault((scheme, port, address), []).append(origin)
        siblings = {}
        for origin in snap.routes.origins:
            scheme, host, port = origin
            found = self._service_addresses.get(host)
            near = [o for a in (found.normal if found else ()) for o in by_address[(scheme, port, a)]]
            siblings[origin] = tuple(dict.fromkeys([origin, *sorted(near, key=snap.routes.origins.index)]))
        return _Table(snap.version, self._generation, {k: tuple(v) for k, v in by_address.items()}, siblings,
                      frozenset(unknown), frozenset((h, p) for _, h, p in snap.routes.origins))

    @staticmethod
    def _governed(table: _Table, scheme: str, port: int, addresses: Iterable[str]) -> tuple[Origin, ...]:
        found: dict[Origin, None] = {}
        for address in addresses:
            for origin in table.by_address.get((scheme, port, address), ()):
                found[origin] = None
        return tuple(found)

    # -- request time ------------------------------------------------------------------------

    async def origins(self, snap, scheme: str, host: str, port: int) -> tuple[Origin, ...]:
        """The governed origins a request to scheme://host:port is for, first match first (empty:
        not governed). Raises Unresolvable when that cannot be established."""
        key = (scheme, literal_host(host), port)
        routes = snap.routes
        if routes.governs(key):  # a service's own name: never waits for a lookup
            return self._table_now(snap).siblings.get(key, (key,))
        if (scheme, port) not in routes.governed_ports:
            return ()  # the common pass-through case: nothing to resolve
        table = await self._table(snap)
        found = self._governed(table, scheme, port, (await self.resolver.resolve(key[1])).normal)
        if not found and (scheme, port) in table.unknown:
            raise Unresolvable(f"The gateway cannot resolve a service of its policy on port {port} yet, so it cannot "
                               "tell whether this destination is governed; nothing was forwarded", 503)
        return found

    # -- where mitmproxy connects (hooks) ----------------------------------------------------

    def running(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    def done(self) -> None:
        for task in (self._task, self._refreshing):
            if task is not None:
                task.cancel()
        self._task = self._refreshing = None

    async def _refresh_forever(self) -> None:
        while True:
            try:
                if (snap := self.store.current) is not None:
                    await self._table(snap)
            except Exception:  # the refresher must survive anything; the last good addresses stay
                log.exception("refreshing the services' addresses failed")
            await asyncio.sleep(1.0)

    async def _connection_verdict(self, host: str, port: int) -> tuple[str, Addresses | None]:
        """What to do with a regular-mode connection to host:port opened by no governed flow:
        PASS (not a governed port), PIN to the addresses checked now, or REFUSE (governed, or
        cannot tell)."""
        snap = self.store.current
        if snap is None:
            return REFUSE, None
        gp = snap.routes.governed_ports
        if ("http", port) not in gp and ("https", port) not in gp:
            return PASS, None
        table = await self._table(snap)
        if (literal_host(host), port) in table.hosts:
            return REFUSE, None  # only governed flows may go there, and they never come here
        try:
            found = await self.resolver.resolve(literal_host(host))
        except Unresolvable:
            return REFUSE, None
        for scheme in ("http", "https"):  # either: a raw tunnel has no scheme, and a refusal costs nothing here
            if self._governed(table, scheme, port, found.normal) or (scheme, port) in table.unknown:
                return REFUSE, None
        return PIN, found

    async def server_connect(self, data) -> None:
        """Pin a pass-through connection to a name on a governed port to the address checked now,
        or refuse it when that address is governed (DNS rebinding). Governed flows were pointed at
        their service's own name (point_at); those connections are left to the system resolver."""
        server = data.server
        if isinstance(data.client.proxy_mode, ReverseMode) or server.via is not None or not server.address:
            return
        host, port = server.address[0], server.address[1]
        snap = self.store.current
        if snap is not None and (literal_host(host), port) in self._table_now(snap).hosts:
            return
        verdict, found = await self._connection_verdict(host, port)
        if verdict == REFUSE:
            log.warning("refused a connection to %s:%d: it reaches a governed service outside the gateway's checks",
                        host, port)
            server.error = "refused by the MCP gateway: the destination is a governed service"
        elif verdict == PIN and found is not None and ip_literal(host) is None:
            self._pinned[server.id] = server.address
            server.address = (found.raw[0], port)

    def server_connected(self, data) -> None:
        self._unpin(data.server)

    def server_connect_error(self, data) -> None:
        self._unpin(data.server)

    def _unpin(self, server) -> None:
        original = self._pinned.pop(server.id, None)
        if original is not None:
            # The name again, as if mitmproxy had resolved it: connection reuse, SNI and logs go by
            # the name. mitmproxy refuses address changes on an open connection, hence object's setattr.
            object.__setattr__(server, "address", original)

    async def next_layer(self, nextlayer) -> None:
        """A raw TCP/UDP tunnel (rawtcp, tcp_hosts, or ignore_hosts, which may match a client-chosen
        SNI or Host) to a governed destination would carry MCP past every phase: refuse it."""
        context = nextlayer.context
        if isinstance(context.client.proxy_mode, ReverseMode):
            return
        if nextlayer.layer is None and (decide := mitmproxy_ctx.master.addons.get("nextlayer")) is not None:
            # mitmproxy asks script addons before its own NextLayer: let it decide now (it keeps a
            # layer already set), to see what it decides.
            decide.next_layer(nextlayer)
        address = context.server.address
        if not isinstance(nextlayer.layer, (layers.TCPLayer, layers.UDPLayer)) or not address:
            return
        verdict, _ = await self._connection_verdict(address[0], address[1])
        if verdict == REFUSE:
            log.warning("refused a raw tunnel to %s:%d: it reaches a governed service", address[0], address[1])
            nextlayer.layer = _Refused(context)


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: a failed refresh is logged by the refresher, not as "never retrieved"


class _Refused(layer.Layer):
    """Closes the client connection; the tunnel is never opened."""

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if isinstance(event, events.Start):
            yield commands.CloseConnection(self.context.client)


def point_at(request: http.Request, service) -> None:
    """A governed intercept request goes to its service's own host and port, with its Host: the
    client may have named it otherwise (an address, another name), and a Host naming another
    virtual host on the same address must not receive what is meant for the service."""
    if request.host != service.host or request.port != service.port:
        request.data.host, request.data.port = service.host, service.port
    authority = service.authority
    if request.is_http2 or request.is_http3:
        request.authority = authority
        if headers.has_header(request.headers, "Host"):
            headers.put(request.headers, "Host", authority)
    elif headers.header(request.headers, "Host") != authority:
        headers.put(request.headers, "Host", authority)
