"""The demo's LLM route: the banner's openai snippet, pasted as printed, works through the
gateway, and the provider's MCP tool call is governed (six tools for dev-user)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.demo import Demo
from tests.support.gateway import ROOT

pytestmark = pytest.mark.e2e


def test_the_banners_openai_snippet_works(tmp_path):
    demo = Demo(tmp_path)
    try:
        lines = demo.snippet("tools the caller may call there. Python (openai)")
        assert lines and "openai.OpenAI" in lines[0]
        script = "import openai\n" + "\n".join(lines) + "\n"
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "('mcp_list_tools', 6)" in done.stdout and "('mcp_call', 0)" in done.stdout, done.stdout
        assert "echo: call search_repositories" in done.stdout
    finally:
        demo.stop()
