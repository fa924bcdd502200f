"""Kong vault references (`{vault://...}`) in a decK file: accepted where the native model takes a
secret (policy.secrets resolves them), refused anywhere else, where they would be literal text."""

from __future__ import annotations

from typing import Any

from .deck_registry import RT, RTA, Loc, Problems


# -- Kong vault references ------------------------------------------------------------------------

_TRANSFORMED_VALUE = lambda sub: len(sub) == 3 and sub[0] in ("add", "append", "replace") and sub[1] in (  # noqa: E731
    "headers", "querystring")
SECRET_OPTIONS = {"ai-mcp-oauth2": lambda sub: sub in (("client_secret",), ("token_exchange", "client_secret"),
                                                      ("token_exchange", "request", "actor_token")),
                  "openid-connect": lambda sub: sub in (("client_secret",), ("client_secret", 0)), RTA: _TRANSFORMED_VALUE,
                  RT: _TRANSFORMED_VALUE}
SECRET_OPTIONS.update(dict.fromkeys(("rate-limiting", "rate-limiting-advanced", "ai-rate-limiting-advanced"), lambda sub: sub in (  # Redis login
    ("redis", "password"), ("redis", "username"), ("redis_password",), ("redis_username",))))
SECRET_OPTIONS.update({"ai-proxy": lambda sub: sub in (("auth", "header_value"), ("auth", "param_value")),  # provider keys
                       "ai-proxy-advanced": lambda sub: len(sub) == 4 and sub[0] == "targets" and sub[2:] in (
                           ("auth", "header_value"), ("auth", "param_value"))})
SECRET_OPTIONS["http-log"] = lambda sub: len(sub) == 2 and sub[0] == "headers"  # a log endpoint's credential


def check_vault_references(tree: Any, problems: Problems, loc: Loc = (), plugin: tuple[str, int] | None = None) -> None:
    """`{vault://...}` is resolved where the native model takes a secret (consumer keys,
    ai-mcp-oauth2 client_secret, request-transformer-advanced values); anywhere else it would be
    used as literal text, so it is refused."""
    if isinstance(tree, dict):
        if len(loc) >= 2 and loc[-2] == "plugins" and isinstance(tree.get("name"), str):
            if tree.get("enabled") is False:
                return
            plugin = (tree["name"], len(loc))
        for key, value in tree.items():
            check_vault_references(value, problems, (*loc, key), plugin)
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            check_vault_references(value, problems, (*loc, i), plugin)
    elif isinstance(tree, str) and "{vault://" in tree:
        if loc[-3:-2] == ("keyauth_credentials",) and loc[-1] == "key":
            return
        if plugin is not None and loc[plugin[1]:plugin[1] + 1] == ("config",):
            allowed = SECRET_OPTIONS.get(plugin[0])
            if allowed is not None and allowed(loc[plugin[1] + 1:]):
                return
        problems.add(loc, "a Kong vault reference is resolved only in consumer keys, ai-mcp-oauth2 client_secret "
                     "and request-transformer(-advanced) values; here it would be used as literal text")
