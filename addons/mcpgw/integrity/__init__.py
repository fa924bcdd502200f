"""Tool integrity (docs/integrity.md): hold the tools an upstream lists to what was approved.

- settings.py: the route's `integrity:` settings (imports only policy/base.py);
- digest.py: canonical JSON and SHA-256 pins of tool definitions;
- lockfile.py: the reviewable lock file beside the policy, and readable diffs;
- pinning.py: the per-route judge (lock file or trust on first use) and what it withheld;
- kinds.py: what is pinned (tools; prompts, resources and templates with `pin_also`);
- phases.py: the pipeline phases (shared pins synced, calls to withheld tools refused, the list
  transform installed);
- transform.py: the server -> client transform that withholds changed tools from lists;
- approved.py (with protocol/bytescreen.py): the raw-bytes screen that lets answers with nothing
  to act on pass unparsed (Hyperscan; lists judged clean before, recognised by their bytes);
- scanning.py, rules.yaml: description scanning; leaks.py: secret scanning;
- own_secrets.py: the gateway's own secrets (what a route sends upstream that the client did
  not) masked in every answer of every route holding one, with or without `integrity:`;
- explain.py: what integrity would do (mcp.explain, `mcp-gateway explain`); cli.py, catalog.py:
  `mcp-gateway pin` and `scan`.
"""


def record(ctx, *findings: dict) -> None:
    """Add findings to the flow's audit records (the `findings` field of each)."""
    ctx.audit_fields.setdefault("findings", []).extend(findings)
