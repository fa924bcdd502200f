"""Kong's request-validator on a decK route, service or globally -> the route's `request_validator`
(addons/mcpgw/request_validator/, docs/kong.md). Options keep Kong's names; what the gateway cannot
judge as Kong would (path parameters, styles other than form/simple, Lua patterns) is refused when
the native settings are validated, with the reason, located at the plugin's config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .deck_registry import Plugin, RouteBuild, take_options

if TYPE_CHECKING:
    from .deck import Translator

NAME = "request-validator"
OPTIONS = ("version", "body_schema", "parameter_schema", "allowed_content_types", "content_type_parameter_validation",
           "verbose_response", "array_length_compat")


def translate(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    config = take_options(plugin, OPTIONS, t.problems)
    if isinstance(config.get("parameter_schema"), list):  # Kong's null inside an entry means unset, as at the top
        config["parameter_schema"] = [{k: v for k, v in p.items() if v is not None} if isinstance(p, dict) else p
                                      for p in config["parameter_schema"]]
    build.native["request_validator"] = config
    build.origin(t, "request_validator", plugin)


HANDLERS = {NAME: translate}
