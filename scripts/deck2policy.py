"""Print the native policy equivalent to a Kong decK file (see scripts/deck2policy --help)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "addons"))

from mcpgw.policy.deck import DENY_RESPONSES, DeckSettings, convert_file  # noqa: E402
from mcpgw.policy.loader import PolicyError  # noqa: E402

DESCRIPTION = """\
Translate a Kong decK file (_format_version 3.0) into the gateway's native policy and print it.

The gateway also loads decK files directly (--set mcp_policy=kong.yaml), translating them the
same way at every load and reload; this shows what a decK file becomes, or gives you a native
policy to keep editing. docs/kong.md lists what each Kong entity and plugin maps to and what is
refused. decK's ${{ env "DECK_NAME" }} variables must be set, as for `deck gateway sync`."""

EPILOG = """\
examples:
  scripts/deck2policy kong.yaml                      print the native policy
  scripts/deck2policy kong.yaml -o policy.yaml       write it to a file
  scripts/gateway --set mcp_policy=kong.yaml         or run the decK file as it is

exit status: 0 translated, 1 the file cannot be translated (each problem is printed with its
place in the file), 2 usage error."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deck2policy", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("deck_file", help="the decK state file, e.g. kong.yaml")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the native policy to FILE instead of stdout")
    parser.add_argument("--inline-secrets", action="store_true",
                        help="write the values of ${{ env }} secrets (consumer keys, client_secret, injected "
                             "credentials) instead of {env://NAME} references to the same variables")
    parser.add_argument("--deny", choices=DENY_RESPONSES, default="jsonrpc",
                        help="how calls ai-mcp-proxy denies are answered, as the gateway's mcp_deck_deny option: "
                             "jsonrpc (error -32602, Kong before 3.14; the default) or http403 (Kong 3.14+)")
    args = parser.parse_args(argv)
    try:
        text = convert_file(args.deck_file, inline_secrets=args.inline_secrets,
                            settings=DeckSettings(deny_response=args.deny))
    except PolicyError as e:
        print(f"deck2policy: {e}", file=sys.stderr)
        return 1
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
