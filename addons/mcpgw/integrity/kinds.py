"""What can be pinned: tools always, prompts and resources (with resource templates) when a
route asks for them (`integrity.pin_also`). Each kind says which list member carries it, what
identifies an entry, which members its pin covers and which request uses it.

In a pin store a tool is kept under its name (as before prompts and resources were pinned), the
others under a prefixed key (`prompt:NAME`, `resource:URI`, `template:URI_TEMPLATE`), so that
one store and one lock file hold them all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TOOL_FIELDS: tuple[str, ...] = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")


@dataclass(frozen=True, slots=True)
class Kind:
    list_key: str  # the member of a list result holding the entries
    id_field: str  # what names an entry
    fields: tuple[str, ...]  # the members a pin covers (`_meta`, `icons`, `size` ... are left out)
    prefix: str  # of its keys in a pin store
    label: str  # in messages
    record_key: str  # in audit findings
    list_method: str
    call: str | None = None  # the request refused while an entry is withheld
    call_param: str | None = None  # and its param naming the entry

    def key(self, entry: dict[str, Any]) -> str | None:
        """The pin store key of a list entry, or None if it has no usable id."""
        ident = entry.get(self.id_field)
        return self.prefix + ident if type(ident) is str else None


TOOLS = Kind("tools", "name", TOOL_FIELDS, "", "Tool", "tool", "tools/list", "tools/call", "name")
PROMPTS = Kind("prompts", "name", ("name", "title", "description", "arguments"), "prompt:", "Prompt", "prompt",
               "prompts/list", "prompts/get", "name")
RESOURCES = Kind("resources", "uri", ("uri", "name", "title", "description", "mimeType", "annotations"), "resource:",
                 "Resource", "resource", "resources/list", "resources/read", "uri")
TEMPLATES = Kind("resourceTemplates", "uriTemplate", ("uriTemplate", "name", "title", "description", "mimeType",
                                                      "annotations"), "template:", "Resource template", "template",
                 "resources/templates/list")
ALL = (TOOLS, PROMPTS, RESOURCES, TEMPLATES)
ALSO = {"prompts": (PROMPTS,), "resources": (RESOURCES, TEMPLATES)}  # integrity.pin_also -> the kinds it adds


def also(pin_also) -> tuple[Kind, ...]:
    """The kinds pinned beside the tools."""
    return tuple(k for name in pin_also or () for k in ALSO[name])
