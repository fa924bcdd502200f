"""Tool integrity (docs/integrity.md): hold the tools an upstream lists to what was approved.

- settings.py: the route's `integrity:` settings (imports only policy/base.py);
- digest.py: canonical JSON and SHA-256 pins of tool definitions;
- lockfile.py: the reviewable lock file beside the policy, and readable diffs;
- pinning.py: the per-route judge (lock file or trust on first use) and what it withheld;
- phases.py: the pipeline phases (refuse calls to withheld tools, install the list transform);
- transform.py: the server -> client transform that withholds changed tools from lists.
"""


def record(ctx, *findings: dict) -> None:
    """Add findings to the flow's audit records (the `findings` field of each)."""
    ctx.audit_fields.setdefault("findings", []).extend(findings)
