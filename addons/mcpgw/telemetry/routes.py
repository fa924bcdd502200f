"""The policy's per-route telemetry (routes.<name>.telemetry), as running sinks and pipelines:
rebuilt when a policy loads, each sink or pipeline kept across reloads while its settings stay
the same (an unchanged file-log keeps its file and queue)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from .kong_log import FileSink, HttpSink

if TYPE_CHECKING:
    from ..policy.models import Policy
    from .export import Pipeline

log = logging.getLogger("mcpgw.telemetry")


class RouteSinks:
    def __init__(self) -> None:
        self.sinks: dict[str, list[Any]] = {}  # route -> its file/http sinks
        self.pipelines: dict[str, Pipeline] = {}  # route -> its OTLP pipeline (routes.<name>.telemetry.opentelemetry)
        self.prometheus: set[str] = set()
        self._by_settings: dict[Any, Any] = {}  # settings -> sink or pipeline, shared by the routes naming them

    @property
    def active(self) -> bool:
        return bool(self.sinks or self.pipelines)

    def update(self, policy: Policy) -> None:
        sinks: dict[str, list[Any]] = {}
        pipelines: dict[str, Pipeline] = {}
        keep: dict[Any, Any] = {}
        self.prometheus = set()
        for name, route in policy.routes.items():
            t = route.telemetry
            if t is None:
                continue
            if t.prometheus:
                self.prometheus.add(name)
            for settings, make in ((t.file_log, FileSink), (t.http_log, HttpSink)):
                if settings is not None:
                    key = (make.name, settings.key() if hasattr(settings, "key") else settings.model_dump_json())
                    sink = keep.get(key) or self._by_settings.get(key) or make(settings)
                    keep[key] = sink
                    sinks.setdefault(name, []).append(sink)
            if t.opentelemetry is not None:
                key = ("otlp", t.opentelemetry.model_dump_json())
                if key not in keep and key not in self._by_settings:
                    from .export import Pipeline  # the SDK loads only when some route exports

                    keep[key] = Pipeline(t.opentelemetry)
                pipelines[name] = keep.setdefault(key, self._by_settings.get(key))
        for key, old in self._by_settings.items():
            if key not in keep:  # in a thread: a policy reload must not wait for a slow endpoint's flush
                threading.Thread(target=self._close, args=(old,), name="mcpgw-sink-close", daemon=True).start()
        self._by_settings, self.sinks, self.pipelines = keep, sinks, pipelines

    def close(self) -> None:
        for item in self._by_settings.values():
            self._close(item)
        self._by_settings, self.sinks, self.pipelines = {}, {}, {}

    @staticmethod
    def _close(item: Any) -> None:
        try:
            item.close() if hasattr(item, "close") else item.shutdown()
        except Exception:  # closing an old sink must not stop the new policy from applying
            log.exception("closing a telemetry sink failed")
