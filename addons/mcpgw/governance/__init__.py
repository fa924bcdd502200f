"""Tool governance: per-consumer ACLs on tools, prompts and resources (Kong ai-mcp-proxy
semantics), enforced on client requests (`enforce`) and reflected in filtered list results
(`filtering`), both through the one decision function in `engine`."""

from .engine import explain

__all__ = ["explain"]
