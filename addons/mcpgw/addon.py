"""The mitmproxy addon: options, lifecycle and hooks. Hooks only create the flow context and hand
over to the pipeline; every hook fails closed (an exception answers the client with an error
instead of letting mitmproxy forward the flow)."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from mitmproxy import command, ctx, exceptions, http
from mitmproxy.proxy.mode_specs import ReverseMode

from . import (children, context, destinations, guards, health, mitm_dispatch, mitm_options, pipeline, redaction,
               request_stream)
from .ai.addon import LlmAddon
from .limits.addon import LimitsAddon
from .auditlog import AuditLog
from .state import introspection_cache
from .state.redis_sessions import SelectedSessionStore
from .context import FlowContext
from .destinations import Destinations, Unresolvable
from .tunnels import TunnelGate
from .identity import exchange, prm
from .headers import host_header
from .metrics import Metrics
from .telemetry.addon import DropCollector, Telemetry
from .upstream_proxy.forward import UpstreamProxyAuth
from .mitm_options import REQUIRED_OPTIONS  # noqa: F401 - the gateway's required mitmproxy options, named here too
from .mitm_ui import MCPConsole
from .policy.deck import DENY_RESPONSES, DeckSettings
from .policy.loader import PolicyError
from .policy.store import PolicyStore, Snapshot
from .routing import RouteMatch
from .sessions import binding as session_binding
from .fail_closed import FailClosed
from .responses import gateway_failure, json_response, replacing_upstream

log = logging.getLogger("mcpgw")

DEFAULT_POLICY = "policies/gateway.yaml"


class MCPGateway:
    def __init__(self) -> None:
        self.store = PolicyStore()
        self._option_hosts: list[str] = []
        self._hosts_cache: tuple[int, frozenset[str]] | None = None
        self._startup_error: str | None = None
        self._running = False
        self._watcher: asyncio.Task | None = None
        self._poll = 1.0
        self._health = ""  # mcp_health
        self._uninstall_redaction: Callable[[], None] | None = None
        self._uninstall_request_stream: Callable[[], None] | None = None
        self._uninstall_dispatch: Callable[[], None] | None = None
        # Audit log, metrics, mitmproxy UI, ...: child addons, which this addon calls after its own
        # handling of each event (children.py), so they see each flow as the pipeline left it.
        self.audit = AuditLog(self.store)
        self.destinations = Destinations(self.store)  # intercept mode: services' addresses, checks at connect
        metrics = Metrics(self.store, self.audit)
        self.telemetry = Telemetry(self.store, self.audit)  # OpenTelemetry spans/metrics (mcp_otlp)
        metrics.registry.register(DropCollector(self.telemetry))
        self.children = children.for_gateway(self, [
            # LLM routes (ai/): their counters among the metrics, an audit record per MCP tool call inside an
            # answer; first, so that on a failed flow it completes the LLM call before the audit log records it
            LlmAddon(self.audit, metrics),
            self.audit, metrics, MCPConsole(self.store), self.destinations,
            TunnelGate(self.store, self.destinations),  # intercept_unmatched: block covers CONNECT too
            self.telemetry, LimitsAddon(),  # LimitsAddon: token limits charged when an LLM answer ends
            UpstreamProxyAuth(self.store)])  # upstream_proxy: the route proxy's credentials on its CONNECT

    # -- lifecycle -------------------------------------------------------------------------

    def load(self, loader) -> None:
        self._uninstall_redaction = redaction.install(self.store)  # before anything is loaded or logged
        self._uninstall_request_stream = request_stream.install()  # before the first connection
        self._uninstall_dispatch = mitm_dispatch.install()  # events skip the addons with nothing for them
        memory = session_binding.handover(ctx.master)  # kept on the master: bindings outlive a script reload
        session_binding.use(SelectedSessionStore(memory, self._active_policy))  # gateway.state.backend: memory or redis
        introspection_cache.use_policy(self._active_policy)  # introspection answers shared the same way
        exchange.install(ctx.master, self._active_policy)  # exchanged tokens: kept on the master, shared the same way
        loader.add_option("mcp_policy", str, "",
                          f"MCP gateway policy file (native YAML or a Kong decK file). Default: {DEFAULT_POLICY} if it exists.")
        loader.add_option("mcp_public_hosts", str, "",
                          "Comma-separated extra Host names the gateway answers to in gateway (reverse) mode.")
        loader.add_option("mcp_policy_poll", str, "1",
                          "Seconds between checks of the policy file (and the files it references) for changes.")
        loader.add_option("mcp_policy_settle", str, "0.5",
                          "Seconds a changed policy file must stay unchanged before it is loaded (0: at once).")
        loader.add_option("mcp_health", str, "",
                          "Path of the gateway's own health endpoint on its gateway listeners, e.g. /healthz (off when "
                          "empty); answered before routing, never forwarded (docs/scaling.md).")
        loader.add_option("mcp_deck_deny", str, "jsonrpc",
                          "decK files: how a call ai-mcp-proxy denies is answered: jsonrpc (error -32602, Kong before "
                          "3.14) or http403 (HTTP 403, Kong 3.14+).", choices=list(DENY_RESPONSES))
        # Now, not in `running`: mitmproxy opens its listeners after loading scripts, and before `running`.
        if changed := mitm_options.enforce(ctx.options):
            log.info("MCP gateway sets %s", ", ".join(f"{k}={v!r}" for k, v in changed.items()))
        self.children.load(loader, ctx.master)

    # Each hook event: the gateway's own handling, then the children's hooks for it (children.py).

    def configure(self, updated: set[str]) -> None:
        self._configure(updated)
        self.children.configure(updated)

    def _configure(self, updated: set[str]) -> None:
        mitm_options.refuse_changes(ctx.options, updated)
        if "mcp_health" in updated:  # read on every flow: kept here, as each read of ctx.options deep-copies it
            self._health = ctx.options.mcp_health
        if self._mistyped_option():
            return  # start-up: nothing loads, every request is refused (503) until `running` stops mitmproxy
        if "mcp_policy_settle" in updated:
            try:
                self.store.settle.interval = float(ctx.options.mcp_policy_settle)
                if not 0 <= self.store.settle.interval <= 60:
                    raise ValueError
            except ValueError:
                raise exceptions.OptionsError("mcp_policy_settle must be a number of seconds between 0 and 60") from None
        if "mcp_policy_poll" in updated:
            try:
                self._poll = float(ctx.options.mcp_policy_poll)
                if not 0.05 <= self._poll <= 3600:
                    raise ValueError
            except ValueError:
                raise exceptions.OptionsError("mcp_policy_poll must be a number of seconds between 0.05 and 3600") from None
        if "mcp_public_hosts" in updated:
            self._option_hosts = [h.strip() for h in ctx.options.mcp_public_hosts.split(",") if h.strip()]
            self._hosts_cache = None
        if "mcp_policy" in updated:
            path = self._policy_path()
            # mitmproxy re-applies the old value after refusing a change: no need to reload then.
            if self.store.current is None or path.resolve() != self.store.path:
                self._load_policy(path)
        if "mcp_deck_deny" in updated:
            self._configure_deck()

    def _active_policy(self):
        snap = self.store.current
        return snap.policy if snap is not None else None

    def _mistyped_option(self) -> bool:
        """An unknown option meant for the gateway: refused once running, fatal at start-up."""
        if (found := mitm_options.mistyped(ctx.options)) is None:
            return False
        name, message = found
        if self._running:
            del ctx.options.deferred[name]  # reported: later changes are not refused for it
            raise exceptions.OptionsError(message)
        self._startup_error = f"MCP gateway: {message}"
        log.error(self._startup_error)
        return True

    def _policy_path(self) -> Path:
        if ctx.options.mcp_policy:
            return Path(ctx.options.mcp_policy).expanduser()
        for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
            if (base / DEFAULT_POLICY).is_file():
                return base / DEFAULT_POLICY
        return Path(DEFAULT_POLICY)

    def _load_policy(self, path: Path) -> None:
        try:
            snap = self.store.load(path)
        except PolicyError as e:
            if self._running:  # refuse the option change; the active policy stays
                raise exceptions.OptionsError(f"policy rejected, keeping the active one: {e}") from None
            self._startup_error = f"MCP gateway: cannot start without a valid policy.\n{e}"
            log.error(self._startup_error)
            return
        self._startup_error = None
        log.info("policy version %d loaded from %s (%s): %d route(s) %s", snap.version, snap.source,
                 snap.digest[:12], len(snap.policy.routes), ", ".join(snap.policy.routes))

    def _configure_deck(self) -> None:
        try:
            settings = DeckSettings(deny_response=ctx.options.mcp_deck_deny)
        except ValueError as e:
            if self._running:
                raise exceptions.OptionsError(str(e)) from None
            self._startup_error = f"MCP gateway: {e}"  # never start with another setting than the one asked for
            log.error(self._startup_error)
            return
        changed, self.store.deck = settings != self.store.deck, settings
        if changed and self.store.path is not None:  # a decK file now translates differently: load it again
            self._load_policy(self.store.path)

    def running(self):
        self._run()
        return self.children.call("running")

    def done(self):
        self._stop()
        return self.children.call("done")

    async def next_layer(self, nextlayer) -> None:
        await self.children.call_async("next_layer", nextlayer)

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        await self.children.call_async("http_connect", flow)

    def http_connect_upstream(self, flow: http.HTTPFlow):
        return self.children.call("http_connect_upstream", flow)

    async def server_connect(self, data) -> None:
        await self.children.call_async("server_connect", data)

    def server_connected(self, data):
        return self.children.call("server_connected", data)

    def server_connect_error(self, data):
        return self.children.call("server_connect_error", data)

    def _run(self) -> None:
        # Synchronous on purpose: after a script reload mitmproxy calls `running` synchronously.
        restarted = getattr(ctx.master, "_mcp_gateway_started", False)
        if self._startup_error or self.store.current is None:
            print(self._startup_error or "MCP gateway: no policy loaded", file=sys.stderr, flush=True)
            if not restarted:
                raise SystemExit(1)  # never start proxying without a policy
            # A code reload with a broken policy: every flow is refused (503) until the watcher
            # loads a valid version.
            log.error("MCP gateway reloaded without a valid policy: refusing all traffic until one loads")
        self._running = True
        ctx.master._mcp_gateway_started = True  # survives the package re-import of a script reload
        if gc.get_freeze_count() == 0:  # once per process
            _freeze_startup_heap()
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self.store.watch(self._poll))

    def _stop(self) -> None:
        redaction.mask_in_flight()  # mitmproxy's Save writes the flows still in flight after this hook
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if self._uninstall_redaction is not None:
            self._uninstall_redaction()
            self._uninstall_redaction = None
        for undo in (self._uninstall_request_stream, self._uninstall_dispatch):
            if undo is not None:
                undo()
        self._uninstall_request_stream = self._uninstall_dispatch = None

    @command.command("mcp.reload")
    def reload(self) -> str:
        """Re-read the policy file now; an invalid version is rejected and the active one stays."""
        result = redaction.redact(self.store.reload(force=True))
        log.info("mcp.reload: %s", result)
        return result

    # -- hooks -----------------------------------------------------------------------------

    # A sync hook returns what the children's may leave to await (children.Children.call).

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        await self._requestheaders(flow)
        await self.children.call_async("requestheaders", flow)

    async def request(self, flow: http.HTTPFlow) -> None:
        await self._request(flow)
        await self.children.call_async("request", flow)

    def responseheaders(self, flow: http.HTTPFlow):
        self._responseheaders(flow)
        return self.children.call("responseheaders", flow)

    def response(self, flow: http.HTTPFlow):
        self._response(flow)
        return self.children.call("response", flow)

    # A flow can also end without a response: upstream unreachable, killed, client gone. Script
    # addons run before mitmproxy's Save, Dumper and mitmweb's view on every event, so masking
    # here keeps the stored credentials out of what those record.
    def error(self, flow: http.HTTPFlow) -> None:
        if context.get(flow) is not None:
            redaction.mask_ended(flow)
        return self.children.call("error", flow)

    async def _requestheaders(self, flow: http.HTTPFlow) -> None:
        # async: routing may resolve host names and identity may ask an IdP, before the body is read
        if flow.response or flow.error or not flow.live:
            return
        if self._health and await health.answer(flow, self.store, self._health):  # before routing: never forwarded
            return
        with self._fail_closed(flow, "route it"):
            snap = self.store.current
            if snap is None:
                flow.response = json_response(503, {"message": "MCP gateway has no active policy"})
                return
            fctx = await self._new_context(snap, flow)
            if fctx is not None:
                flow.request.stream = False  # governed bodies are inspected whole
                flow.response = await pipeline.run(pipeline.header_phases(fctx), fctx, flow)
        if flow.response is not None:  # answered here, before the body, which is never read (request_stream)
            redaction.mask_request(flow.request)  # mitmproxy keeps (and may save) the flow
            flow.request.headers.pop("expect", None)  # no 100 Continue: the client need not send the body

    async def _request(self, flow: http.HTTPFlow) -> None:
        fctx = context.get(flow)
        if fctx is None or flow.response or flow.error or not flow.live:
            return
        try:
            flow.response = await pipeline.run(pipeline.request_phases(fctx), fctx, flow)
        except Exception:  # fail closed: a phase that raised answers the client with an error, never forwards
            log.exception("request pipeline failed on route %s; refusing", fctx.route_name)
            flow.response = gateway_failure(flow.request, "process it")
        if flow.response is not None:
            redaction.mask_request(flow.request)  # answered here; mitmproxy keeps (and may save) the flow

    def _responseheaders(self, flow: http.HTTPFlow) -> None:
        fctx = context.get(flow)
        if fctx is None or flow.response is None:
            return
        with self._fail_closed(flow, "process the upstream response", status=502, at_headers=True):
            replacement = pipeline.run_sync(pipeline.response_header_phases(fctx), fctx, flow)
            if replacement is not None:
                flow.response = replacing_upstream(replacement)
            if fctx.snapshot.policy.gateway.debug_headers:
                flow.response.headers["X-MCP-Gateway-Policy"] = f"{fctx.snapshot.version}-{fctx.snapshot.digest[:12]}"
                flow.response.headers["X-MCP-Gateway-Route"] = fctx.route_name or ""

    def _response(self, flow: http.HTTPFlow) -> None:
        fctx = context.get(flow)
        if fctx is None or flow.response is None:
            return
        with self._fail_closed(flow, "process the upstream response", status=502):
            replacement = pipeline.run_sync(pipeline.response_phases(fctx), fctx, flow)
            if replacement is not None:
                flow.response = replacement

    def update(self, flows) -> None:
        for flow in flows:  # flow.kill: a killed flow sends nothing more
            if isinstance(flow, http.HTTPFlow) and not flow.live and context.get(flow) is not None:
                redaction.mask_ended(flow)

    # -- helpers ---------------------------------------------------------------------------

    async def _new_context(self, snap: Snapshot, flow: http.HTTPFlow) -> FlowContext | None:
        # Routing decides on the canonical path (canonical.py), which is also what is forwarded,
        # and in intercept mode on the destination (destinations.py), never on how the client spelt them.
        if isinstance(flow.client_conn.proxy_mode, ReverseMode):
            return self._gateway_context(snap, flow)
        return await self._intercept_context(snap, flow)

    def _gateway_context(self, snap: Snapshot, flow: http.HTTPFlow) -> FlowContext | None:
        req = flow.request
        if not ctx.options.keep_host_header:
            flow.response = json_response(503, {"message": "MCP gateway needs keep_host_header=true"})
            return None
        hosts = self._public_hosts(snap)
        host = host_header(req)
        if refusal := guards.check_host(hosts, host):
            flow.response = refusal
            return None
        if (refusal := guards.canonicalize_request(req)) is not None:
            flow.response = refusal
            return None
        match = snap.routes.match_gateway(req.path)
        if match is None:
            flow.response = json_response(404, {"message": "no route matched with those values"})
            return None
        scheme = "https" if flow.client_conn.tls_established else "http"
        return context.attach(flow, FlowContext(snap, "gateway", match, hosts, host, scheme))

    async def _intercept_context(self, snap: Snapshot, flow: http.HTTPFlow) -> FlowContext | None:
        req = flow.request
        try:
            origins = await self.destinations.origins(snap, req.scheme, req.host, req.port)
        except Unresolvable as e:
            flow.response = json_response(e.status, {"error": "unknown_destination", "message": str(e)})
            return None
        if not origins:  # not ours: mitmproxy handles it as usual, unless the policy says block
            if snap.policy.gateway.intercept_unmatched == "block":
                flow.response = json_response(403, {"message": f"{req.pretty_host} is not governed by this gateway's policy"})
            return None
        if (refusal := guards.canonicalize_request(req)) is not None:
            flow.response = refusal
            return None
        match = next(filter(None, (snap.routes.match_origin(o, req.path) for o in origins)), None)
        if match is None:  # a governed origin answers its routes' paths only: `pass` is for other origins
            flow.response = json_response(403, {"error": "unrouted_path", "message": "This origin is governed by the "
                                                "gateway's policy, and no route of it covers this path"})
            return None
        if match.kind == "prm" and not prm.is_metadata_read(req):
            match = RouteMatch(match.route, "mcp", None)  # only a read of the PRM skips identity
        destinations.point_at(req, match.route.service)
        return context.attach(flow, FlowContext(snap, "intercept", match, frozenset(), host_header(req), req.scheme))

    def _public_hosts(self, snap: Snapshot) -> frozenset[str]:
        if self._hosts_cache is None or self._hosts_cache[0] != snap.version:
            gw = snap.policy.gateway
            self._hosts_cache = (snap.version, guards.public_hosts(gw.urls, gw.hosts, self._option_hosts))
        return self._hosts_cache[1]

    def _fail_closed(self, flow: http.HTTPFlow, what: str, status: int = 500, at_headers: bool = False) -> FailClosed:
        return FailClosed(flow, what, status, at_headers)


def _freeze_startup_heap() -> None:
    """Take what start-up built (mitmproxy, the gateway's modules, the policy) out of the garbage
    collector's walks: a full collection otherwise walks all of it, 70-80 ms on a 2-core machine,
    the first time a few hundred requests after start and again whenever the heap has grown by a
    quarter, inside whichever request is running then. Reference counting still frees these
    objects; only cycles among them (such as the start-up policy's, once a reload replaced it)
    are never collected."""
    gc.collect()
    gc.freeze()
