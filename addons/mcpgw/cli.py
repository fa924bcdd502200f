"""Command line for people and CI, without starting the gateway:

    mcp-gateway check POLICY                      validate a policy (native or decK) and summarize it
    mcp-gateway explain POLICY CONSUMER TOOL      would CONSUMER be allowed to call TOOL, and by which rule
    mcp-gateway verify AUDIT_FILE...              check an audit log's hash chain
    mcp-gateway pin POLICY ROUTE [--update]       approve a route's tools: write them to the lock file

Exit status: 0 = valid / allowed / intact; 1 = invalid / denied / broken; 2 = the question could
not be answered (bad arguments, unreadable file, unknown consumer or route, invalid policy for
explain)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

# Each command imports what it needs when it runs: `verify` and `--help` need neither the policy
# machinery nor mitmproxy, which take a while to import.

OK, NEGATIVE, UNANSWERED = 0, 1, 2

EPILOG = """exit status:
  0  the policy is valid / the call is allowed on every route asked about / the chain is intact
  1  the policy is invalid / the call is denied (or would be, in shadow mode) / the chain is broken
  2  the question could not be answered: bad arguments, unreadable file, unknown consumer or route

examples:
  mcp-gateway check policies/demo.yaml
  mcp-gateway check kong-recipe.yaml --quiet          # a decK file, in CI
  mcp-gateway explain policies/demo.yaml dev-user push_files --route github-mcp
  mcp-gateway explain policies/demo.yaml group:developer search_code
  mcp-gateway verify /var/log/mcp-gateway/audit.jsonl.1 /var/log/mcp-gateway/audit.jsonl
  mcp-gateway pin policies/demo.yaml github-mcp --update  # shows what changed, then approves it"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-gateway", description="Check MCP gateway policies, explain their decisions and verify audit logs.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="validate a policy file and print a summary, or every problem with its line",
                           description="Validate a policy file (native YAML or a Kong decK file). Prints a summary of "
                                       "routes, ACL rules, consumers and the policy's SHA-256, or every problem found "
                                       "with its location.")
    check.add_argument("policy", type=Path, metavar="POLICY")
    check.add_argument("-q", "--quiet", action="store_true", help="print nothing when the policy is valid")

    explain = sub.add_parser("explain", help="would CONSUMER be allowed to call TOOL? (the gateway's own decision)",
                             description="Answer with the decision the gateway makes for a tools/call, and the ACL rule "
                                         "that decides it, on one route or on every route of the policy.")
    explain.add_argument("policy", type=Path, metavar="POLICY")
    explain.add_argument("consumer", metavar="CONSUMER",
                         help="a consumer's username, id or custom_id, or group:NAME[,NAME] for a caller known by its groups")
    explain.add_argument("tool", metavar="TOOL", help="the tool name, as the upstream lists it")
    explain.add_argument("--route", metavar="ROUTE", help="only this route (default: every route)")
    explain.add_argument("--live", action="store_true", help="tool integrity: judge the definition the route's upstream "
                                                             "lists now against its pin and the scan rules")
    explain.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                         help="--live: a header to send upstream; default: the route's injected credential")

    verify = sub.add_parser("verify", help="verify the hash chain of audit log files; report the first broken record",
                            description="Verify audit files as one hash chain, oldest first. Reports the first record "
                                        "that was edited, deleted, inserted or moved, with its file and line.")
    verify.add_argument("files", type=Path, nargs="+", metavar="AUDIT_FILE")
    verify.add_argument("--continued", action="store_true",
                        help="the first file continues a chain whose beginning was rotated away")
    from .integrity.cli import add_commands  # its own module: tool integrity's commands

    add_commands(sub)
    return parser


def _load(path: Path):
    from .policy.loader import PolicyError, load_policy_file

    try:
        return load_policy_file(path), None
    except PolicyError as e:
        return None, e


def _print_problems(err) -> None:
    for problem in err.problems:
        print(f"{err.source}: {problem}", file=sys.stderr)


def check(args: argparse.Namespace) -> int:
    loaded, err = _load(args.policy)
    if err is not None:
        _print_problems(err)
        print(f"{err.source}: invalid ({len(err.problems)} problem{'s' if len(err.problems) != 1 else ''})", file=sys.stderr)
        return NEGATIVE
    if not args.quiet:
        from .report import policy_summary

        policy, digest, _ = loaded
        print(policy_summary(policy, source=str(args.policy), digest=digest))
        print(f"{args.policy}: valid")
    return OK


def explain(args: argparse.Namespace) -> int:
    loaded, err = _load(args.policy)
    if err is not None:
        _print_problems(err)
        return UNANSWERED
    from .report import UnknownCaller, explain_tool

    try:
        identity, answers = explain_tool(loaded[0], args.consumer, args.tool, args.route)
    except (UnknownCaller, KeyError) as e:
        print(f"mcp-gateway explain: {e.args[0]}", file=sys.stderr)
        return UNANSWERED
    for answer in answers:
        print(answer.line(identity, args.tool))
    from .integrity import cli as integrity_cli, explain as integrity

    try:
        headers = integrity_cli._headers(args.header)
    except ValueError as e:
        print(f"mcp-gateway explain: {e}", file=sys.stderr)
        return UNANSWERED
    lines, held_back = integrity.offline(loaded[0], str(args.policy), args.tool, args.route, args.live, headers)
    for line in lines:  # what tool integrity would do (docs/integrity.md)
        print(line)
    return OK if all(a.decision.allowed for a in answers) and not held_back else NEGATIVE


def verify(args: argparse.Namespace) -> int:
    from .auditchain import verify as verify_chain

    try:
        result = verify_chain(args.files, continued=args.continued)
    except OSError as e:
        print(f"mcp-gateway verify: {e.filename}: {e.strerror}", file=sys.stderr)
        return UNANSWERED
    if not result.ok:
        print(result.problem, file=sys.stderr)
        print(f"{result.records} record(s) verified before it", file=sys.stderr)
        return NEGATIVE
    if result.records == 0:
        print("no records: nothing to verify")
        return OK
    files = ", ".join(map(str, args.files))
    print(f"{files}: intact, {result.records} record(s), seq {result.first_seq} to {result.head.seq}, "
          f"last hash {result.head.hash}")
    return OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if hasattr(args, "run"):  # commands registered by their own module
        return args.run(args)
    return {"check": check, "explain": explain, "verify": verify}[args.command](args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # output piped into `head` or the like, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(NEGATIVE)
