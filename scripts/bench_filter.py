"""Micro-benchmark: filtering a 1,000-tool `tools/list` result, against a plain json.loads +
json.dumps of the same body (the least any rewrite of it costs). The target is a ratio of at most
1.5 for a developer who sees six tools, and for an admin who sees all of them.

    .venv/bin/python scripts/bench_filter.py [--tools 1000] [--repeat 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "addons", ROOT / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from demo_github_tools import READ_TOOLS, TOOLS, WRITE_TOOLS  # noqa: E402
from mitmproxy.test import tflow  # noqa: E402

from mcpgw.governance.acl import compiled  # noqa: E402
from mcpgw.governance.engine import view  # noqa: E402
from mcpgw.governance.filtering import ResponseGovernor  # noqa: E402
from mcpgw.governance.ledger import Expected  # noqa: E402
from mcpgw.identity.consumers import Identity  # noqa: E402
from mcpgw.policy.models import Policy  # noqa: E402
from mcpgw.protocol.messages import transform_json_body  # noqa: E402

TARGET_RATIO = 1.5
RECIPE_ACL = {
    "include_consumer_groups": True,
    "default_acl": [{"scope": "tools", "deny": ["developer"]}],
    "tools": [*({"name": t, "acl": {"allow": ["admin", "developer"]}} for t in READ_TOOLS),
              *({"name": t, "acl": {"allow": ["admin"]}} for t in WRITE_TOOLS)],
}


def tools_list_body(count: int) -> bytes:
    """A tools/list answer with `count` realistic tools: the demo catalogue, repeated with
    numbered names after the first round (so the read tools appear once)."""
    tools = []
    for i in range(count):
        spec = TOOLS[i % len(TOOLS)]
        tool = spec.to_mcp_tool().model_dump(mode="json", exclude_none=True)
        if i >= len(TOOLS):
            tool["name"] = f"{spec.name}_{i // len(TOOLS)}"
        tools.append(tool)
    return json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools, "nextCursor": "next"}}).encode()


LIST_REQUEST = Expected("tools/list")
CASES = (  # who, and what the filter has to do for them
    ("developer", Identity("dev-user", groups=("developer",))),  # 6 shown: small re-encoding
    ("admin", Identity("admin-user", groups=("admin",))),  # all shown: the body is left as it came
    ("no group", Identity("eason")),  # all but the 11 listed tools: everything re-encoded
)


def governor(identity: Identity) -> ResponseGovernor:
    policy = Policy.model_validate({"services": {"gh": {"url": "http://127.0.0.1:1/mcp"}},
                                    "routes": {"gh": {"service": "gh", "paths": ["/gh"], "acl": RECIPE_ACL}}})
    acl = compiled(policy.routes["gh"].acl)
    return ResponseGovernor(tflow.tflow(), "gh", view(acl, identity), identity.username, identity.username)


def best(fn, repeat: int) -> float:
    return min(timeit.repeat(fn, number=1, repeat=repeat))


def bench_filter(tools: int = 1000, repeat: int = 30) -> dict[str, float]:
    """Ratio of filtering (the gateway's path for a buffered JSON answer: parse, filter, encode if
    changed) to a plain json.loads + json.dumps of the same body, per case; printed and returned."""
    body = tools_list_body(tools)
    baseline = best(lambda: json.dumps(json.loads(body)), repeat)
    ratios = {}
    for label, identity in CASES:
        g = governor(identity)

        def run(g: ResponseGovernor = g) -> bytes | None:
            g.expected[(int, 1)] = LIST_REQUEST  # each run answers a fresh tools/list request
            return transform_json_body(body, [g])

        out = run()
        shown = len(json.loads(out if out is not None else body)["result"]["tools"])
        elapsed = best(run, repeat)
        ratios[label] = elapsed / baseline
        print(f"filter {tools} tools, {label:9} ({shown:4} shown): {elapsed * 1000:6.2f} ms  "
              f"vs loads+dumps {baseline * 1000:6.2f} ms  ratio {ratios[label]:.2f} (target <= {TARGET_RATIO})")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tools", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    ratios = bench_filter(args.tools, args.repeat)
    sys.exit(0 if max(ratios.values()) <= TARGET_RATIO else 1)


if __name__ == "__main__":
    main()
