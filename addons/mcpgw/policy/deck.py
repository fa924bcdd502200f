"""Kong decK files as policies.

A policy file with `_format_version` is a decK state file (format 3.0). It is translated into the
native policy on every load and reload, then validated like one; `scripts/deck2policy` prints the
translation. decK's `${{ env "DECK_NAME" }}` is substituted first, on the parsed values; Kong
vault references (`{vault://env/NAME}`) pass through and are resolved by `policy.secrets` where
the native model takes secrets.

Entities map one to one (consumer groups, consumers with their keys, services, routes); plugins
are resolved per route as Kong does (route over service over global, consumer-scoped ones apart)
and each becomes a setting of the native route (`deck_plugins`). Anything that cannot be
reproduced is refused with one message per item, naming its place in the file: an ignored
security plugin would be a hole. docs/kong.md lists what is supported and what it becomes.

This module assembles the translation: deck_env (substitution), deck_translator (the entity walk,
`DeckSettings`), deck_consumers (consumers and groups), deck_plugins (the plugins), then the
native policy and its validation. Its public names (`translate_deck`, `convert_file`,
`DeckSettings`, `DENY_RESPONSES`, `kong_id`, `Translator`) stay importable from here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from . import deck_limits, deck_registry, deck_vault
from .deck_consumers import kong_id  # noqa: F401 (re-exported)
from .deck_env import plain, substitute_env
from .deck_registry import Loc, Origin, Problems, RouteBuild
from .deck_translator import DENY_RESPONSES, DeckSettings, Translator  # noqa: F401 (DENY_RESPONSES re-exported)
from .yaml_source import PolicyError, parse_yaml


# -- the native policy -------------------------------------------------------------------------------


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.hostname else None


def _native_policy(t: Translator, routes: dict[str, RouteBuild]) -> dict[str, Any]:
    gateway: dict[str, Any] = {}
    urls = sorted({o for build in routes.values() for u in build.public_urls if (o := _origin(u))})
    if urls:
        gateway["urls"] = urls
    if t.hosts:
        gateway["hosts"] = t.hosts
    deck_limits.gateway_state(t, gateway)  # the Redis rate-limiting plugins named
    limits = [build.native.get("acl", {}).get("max_request_body_size", 0) for build in routes.values()]
    if max(limits, default=0) > deck_registry.DEFAULT_BODY_LIMIT:
        gateway["max_body_size"] = max(limits)
    services = {}
    for name in dict.fromkeys(build.service for build in routes.values()):
        service = t.services[name]
        services[name] = {"url": service.url}
    policy: dict[str, Any] = {"version": 1}
    if gateway:
        policy["gateway"] = gateway
    if t.groups:
        policy["consumer_groups"] = list(t.groups)
    if t.consumers:
        policy["consumers"] = t.consumers
    policy["services"] = services
    policy["routes"] = {name: build.native for name, build in routes.items()}
    return policy


def _validation_problems(err: ValidationError, origins: dict[Loc, Origin], problems: Problems) -> list[str]:
    """Native validation errors, placed in the decK file through the origins of native sections
    (plugin options keep their Kong names, so the rest of a location usually exists there too)."""
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        cut = next((n for n in range(len(loc), 0, -1) if loc[:n] in origins), 0)
        message = "unknown option" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        if cut:
            origin = origins[loc[:cut]]
            problems.add((*origin.loc, *loc[cut:]), message, name=origin.name, name_at=origin.name_at)
        else:
            problems.add(("(translated policy)", *loc) if loc else (), message)
    return problems.messages()


def translate_deck(data: dict[str, Any], source: str, root: yaml.Node | None = None, *,
                   env: Mapping[str, str] | None = None, secret_references: bool = False,
                   settings: DeckSettings | None = None) -> dict[str, Any]:
    """The native policy of a decK file, as a plain dict, validated. Raises PolicyError with one
    located message per problem. With `secret_references`, secrets written as decK env
    substitutions come out as `{env://NAME}` references instead of their values (the converter)."""
    from .models import Policy
    from .secrets import SecretResolver

    env = os.environ if env is None else env
    problems = Problems(root)
    data = substitute_env(data, env, problems)
    t = Translator(problems, secret_references, settings or DeckSettings())
    t.read(data)
    deck_vault.check_vault_references(data, problems)
    routes = t.build_routes()
    if not routes and not problems:
        problems.add((), "the file defines no route: nothing would be served")
    if problems:
        raise PolicyError(source, problems.messages())
    native = plain(_native_policy(t, routes))
    resolver = SecretResolver(base_dir=Path(source).parent)
    resolver.env = {k: v for k, v in env.items() if k.startswith("DECK_")}
    try:
        Policy.model_validate(native, context={"secrets": resolver})
    except ValidationError as e:
        raise PolicyError(source, _validation_problems(e, t.origins, problems)) from None
    return native


def convert_file(path: str | Path, *, env: Mapping[str, str] | None = None, inline_secrets: bool = False,
                 settings: DeckSettings | None = None) -> str:
    """The native policy of a decK file as YAML (what scripts/deck2policy prints)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(source, [f"cannot read the file: {e}"]) from None
    data, root = parse_yaml(text, source)
    if not isinstance(data, dict) or "_format_version" not in data:
        raise PolicyError(source, ["not a decK file: it has no _format_version"])
    native = translate_deck(data, source, root, env=env, secret_references=not inline_secrets, settings=settings)
    header = (f"# Native MCP gateway policy translated from the Kong decK file {Path(path).name}.\n"
              f"# Run it with: scripts/gateway --set mcp_policy=<this file> (docs/kong.md explains the mapping).\n")
    return header + yaml.safe_dump(native, sort_keys=False, allow_unicode=True, width=120)
