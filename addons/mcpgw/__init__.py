"""MCP security gateway: a mitmproxy addon that routes, authenticates, governs and audits MCP traffic."""

__version__ = "0.1.0"
