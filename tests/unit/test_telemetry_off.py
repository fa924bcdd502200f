"""Telemetry off costs nothing at import: the gateway addon loads without the OpenTelemetry SDK
(the SDK and its exporters load only when something exports: export.py, imported lazily)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gateway_imports_without_the_sdk():
    code = ("import sys; sys.path[:0] = ['addons', '.']; import mcpgw.addon, mcpgw.pipeline; "
            "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter', "
            "'grpc'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
