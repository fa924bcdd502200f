"""`mcp-gateway pin`: approve a route's tools by writing their pins to the lock file.

    mcp-gateway pin POLICY ROUTE              first approval (refuses to overwrite a changed catalog)
    mcp-gateway pin POLICY ROUTE --update     print what changed since the last approval, then write
    mcp-gateway scan POLICY ROUTE | FILE      description scan findings of a live route or a saved list

The catalog is fetched from the route's upstream (integrity/catalog.py) with `--header` values
or, without them, the route's injected credential. Exit status: 0 written or up to date;
1 the catalog differs from the lock file and --update was not given; 2 not answered."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

OK, NEGATIVE, UNANSWERED = 0, 1, 2


def add_commands(sub) -> None:
    pin = sub.add_parser("pin", help="approve a route's tools: write their pins to the lock file beside the policy",
                         description="Fetch the route's tool catalog from its upstream and write the SHA-256 pins of "
                                     "the tool definitions to the lock file (docs/integrity.md). With --update, print "
                                     "what changed since the last approval first.")
    pin.add_argument("policy", type=Path, metavar="POLICY")
    pin.add_argument("route", metavar="ROUTE")
    pin.add_argument("--update", action="store_true", help="replace the route's existing pins, after showing the diff")
    pin.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                     help="a header to send upstream (e.g. the credential); default: the route's injected one")
    pin.add_argument("--url", help="fetch from this MCP URL instead of the route's service URL")
    pin.set_defaults(run=run_pin)

    scan = sub.add_parser("scan", help="scan tool definitions for poisoning: a live route, or a saved tools/list answer",
                          description="Print the findings of the description scan (integrity/rules.yaml and the route's "
                                      "rules_file) for a route's live catalog (POLICY ROUTE) or for a saved tools/list "
                                      "answer (FILE: a JSON-RPC response, its result, or a list of tools). Exit status "
                                      "0: no finding, 1: findings, 2: not answered.")
    scan.add_argument("target", nargs="+", metavar="POLICY ROUTE | FILE")
    scan.add_argument("--rules", type=Path, metavar="FILE", help="extra rules (default: the route's rules_file, if any)")
    scan.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                      help="a header to send upstream; default: the route's injected credential")
    scan.add_argument("--json", action="store_true", help="print the findings as JSON")
    scan.set_defaults(run=run_scan)


def _headers(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, value = v.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--header expects 'NAME: VALUE', got a value without a colon")
        out[name.strip()] = value.strip()
    return out


def run_pin(args: argparse.Namespace) -> int:
    from ..policy.loader import PolicyError, load_policy_file
    from . import lockfile
    from .catalog import CatalogError, fetch_catalog, route_headers
    from .kinds import TOOLS, also
    from .pinning import lock_path

    try:
        policy = load_policy_file(args.policy)[0]
    except PolicyError as e:
        for problem in e.problems:
            print(f"{e.source}: {problem}", file=sys.stderr)
        return UNANSWERED
    route = policy.routes.get(args.route)
    if route is None:
        print(f"mcp-gateway pin: no route {args.route!r} (routes: {', '.join(sorted(policy.routes))})", file=sys.stderr)
        return UNANSWERED
    url = args.url or policy.services[route.service].url
    kinds = also(route.integrity.pin_also if route.integrity else ())  # prompts, resources: pinned too
    try:
        headers = _headers(args.header) if args.header else route_headers(route)
        catalog = fetch_catalog(url, headers, lists=tuple((k.list_method, k.list_key, k.id_field) for k in (TOOLS, *kinds)))
        tools, others = catalog["tools"], {k: catalog[k.list_key] for k in kinds}
    except (ValueError, CatalogError) as e:
        print(f"mcp-gateway pin: {e}", file=sys.stderr)
        return UNANSWERED
    except Exception as e:  # httpx errors: a message, not a traceback (and never the headers)
        print(f"mcp-gateway pin: could not fetch the catalog from {url}: {type(e).__name__}", file=sys.stderr)
        return UNANSWERED
    path = lock_path(str(args.policy.resolve()), route.integrity)
    try:
        old = lockfile.read(path).get(args.route)
    except ValueError as e:
        print(f"mcp-gateway pin: {e}", file=sys.stderr)
        return UNANSWERED
    if old is not None:
        changes = lockfile.diff(old, tools, others)
        if not changes:
            print(f"{path}: {args.route}: {_counted(tools, others)}, up to date")
            return OK
        print("\n".join(changes))
        if not args.update:
            print(f"{path}: {args.route}: the catalog changed since it was approved; review the diff above and "
                  "run again with --update to approve it", file=sys.stderr)
            return NEGATIVE
    lockfile.write(path, args.route, tools, others)
    print(f"{path}: {args.route}: {_counted(tools, others)} pinned")
    return OK


def _counted(tools: list, others: dict) -> str:
    return ", ".join([f"{len(tools)} tool(s)", *(f"{len(v)} {k.list_key}" for k, v in others.items())])


def _saved_tools(path: Path) -> list:
    import json

    data = json.loads(path.read_text("utf-8"))
    if isinstance(data, dict) and isinstance(data.get("result"), dict):
        data = data["result"]
    if isinstance(data, dict):
        data = data.get("tools")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a tools/list answer, its result, or a list of tools")
    return data


def run_scan(args: argparse.Namespace) -> int:
    import json

    from .catalog import CatalogError, fetch_tools, route_headers
    from .scanning import Scanner, load_rules

    rules_file = args.rules
    try:
        if len(args.target) == 1:
            tools = _saved_tools(Path(args.target[0]))
        elif len(args.target) == 2:
            from ..policy.loader import PolicyError, load_policy_file

            policy_path, route_name = Path(args.target[0]), args.target[1]
            try:
                policy = load_policy_file(policy_path)[0]
            except PolicyError as e:
                for problem in e.problems:
                    print(f"{e.source}: {problem}", file=sys.stderr)
                return UNANSWERED
            route = policy.routes.get(route_name)
            if route is None:
                print(f"mcp-gateway scan: no route {route_name!r}", file=sys.stderr)
                return UNANSWERED
            scan = route.integrity.scan if route.integrity else None
            if rules_file is None and scan is not None and scan.rules_file:
                rules_file = (policy_path.resolve().parent / scan.rules_file)
            headers = _headers(args.header) if args.header else route_headers(route)
            tools = fetch_tools(policy.services[route.service].url, headers)
        else:
            print("mcp-gateway scan: give POLICY ROUTE or FILE", file=sys.stderr)
            return UNANSWERED
        scanner = Scanner(load_rules(rules_file))
    except (OSError, ValueError, CatalogError) as e:
        print(f"mcp-gateway scan: {e}", file=sys.stderr)
        return UNANSWERED
    except Exception as e:  # httpx errors: a message, not a traceback (and never the headers)
        print(f"mcp-gateway scan: could not fetch the catalog: {type(e).__name__}", file=sys.stderr)
        return UNANSWERED
    found = {name: fs for name, fs in scanner.scan_list(tools).items() if fs}
    if args.json:
        print(json.dumps({name: [f.record() for f in fs] for name, fs in found.items()}, indent=2, ensure_ascii=True))
    else:
        for name, fs in found.items():
            for f in fs:
                shown = name.encode("unicode_escape").decode() if not name.isprintable() or not name.isascii() else name
                print(f"{shown}: {f.rule} ({f.severity}) in {f.where}: {f.excerpt}")
        total = sum(len(fs) for fs in found.values())
        print(f"{len(tools)} tool(s) scanned, {total} finding(s) in {len(found)} tool(s)",
              file=sys.stderr if total else sys.stdout)
    return NEGATIVE if found else OK
