"""A route's `integrity:` settings. Imports only policy/base.py, so that policy/models.py can
reference it without pulling the integrity machinery into the policy loader."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from ..policy.base import StrictModel

Mode = Literal["enforce", "shadow", "off"]
Severity = Literal["low", "medium", "high", "critical"]
Action = Literal["flag", "block"]


class ScanSettings(StrictModel):
    """Description scanning at list time (integrity/rules.yaml)."""

    mode: Mode = Field("enforce", description="enforce (act on findings), shadow (block acts as flag) or off")
    rules_file: str | None = Field(None, description="Extra rules (YAML, the format of integrity/rules.yaml), relative to "
                                                     "the policy file's directory; a rule with a default rule's id replaces it")
    actions: dict[Severity, Action] = Field(
        default_factory=lambda: {"low": "flag", "medium": "flag", "high": "block", "critical": "block"},
        description="What a finding of each severity does: flag (audit record, mitmweb comment) or block (the tool is "
                    "withheld from lists and its calls refused); a severity left out flags")

    def action(self, severity: str) -> str:
        return "flag" if self.mode == "shadow" else self.actions.get(severity, "flag")  # type: ignore[call-overload]


# The built-in credential detectors (integrity/leaks.py has their patterns)
DETECTORS = ("github_token", "aws_access_key", "slack_token", "slack_webhook", "openai_key", "private_key", "jwt",
             "google_api_key", "stripe_key")
LeakAction = Literal["block", "redact", "audit"]


class SecretRule(StrictModel):
    """A user detector: a name (shown in findings and errors) and a regular expression."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    regex: str

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            if re.compile(v).search(""):
                raise ValueError("the expression matches the empty string")
        except re.error as e:
            raise ValueError(f"bad regular expression: {e}") from None
        return v


class SecretSettings(StrictModel):
    """Secret scanning of tool traffic: arguments going up, everything coming down."""

    mode: Mode = Field("enforce", description="enforce, shadow (every action only audits) or off")
    arguments: LeakAction = Field("block", description="A client message (tools/call arguments, ...) carrying a credential: "
                                                       "block (refused with a JSON-RPC error), redact, or audit")
    results: LeakAction = Field("redact", description="A server message (results, content, structuredContent, errors, "
                                                      "notifications) carrying a credential: redact, block (an answer "
                                                      "becomes a JSON-RPC error), or audit")
    detectors: list[str] | None = Field(None, description=f"Built-in detectors to use (default: all of {', '.join(DETECTORS)})")
    rules: list[SecretRule] = Field(default_factory=list, description="Extra detectors: {name, regex}")

    @field_validator("detectors")
    @classmethod
    def _known(cls, v: list[str] | None) -> list[str] | None:
        unknown = [d for d in v or () if d not in DETECTORS]
        if unknown:
            raise ValueError(f"unknown detector(s) {', '.join(unknown)} (known: {', '.join(DETECTORS)})")
        return v


class IntegritySettings(StrictModel):
    """Tool integrity on one route (docs/integrity.md)."""

    pin: Mode = Field("off", description="Rug-pull protection: enforce (withhold changed or unpinned tools and refuse "
                                         "their calls), shadow (list and forward them, audit and mark only) or off")
    pins: Literal["lock", "tofu"] = Field("lock", description="Where approvals come from: lock (the lock file, written by "
                                                              "`mcp-gateway pin ROUTE`) or tofu (trust on first use: the "
                                                              "first definition the gateway sees is pinned in the pin store)")
    lock_file: str | None = Field(None, description="Lock file, relative to the policy file's directory "
                                                    "(default: <policy name>.pins.json beside the policy)")
    pin_store: str | None = Field(None, description="tofu: file the pins are kept in, relative to the policy file's "
                                                    "directory, so they survive a restart (default: memory only)")
    pin_also: list[Literal["prompts", "resources"]] = Field(
        default_factory=list, description="Pin these lists too, the same way: prompts (prompts/list; prompts/get of a "
                                          "withheld prompt is refused) and resources (resources/list and "
                                          "resources/templates/list; resources/read of a withheld resource is refused)")
    scan: ScanSettings | None = Field(None, description="Scan tool definitions for poisoning (hidden instructions, "
                                                        "invisible Unicode, cross-tool shadowing, look-alike names)")

    secrets: SecretSettings | None = Field(None, description="Secret scanning of tool traffic; the gateway's own secrets "
                                                             "are always redacted from what the upstream sends back")

    @property
    def active(self) -> bool:
        return self.pin != "off" or (self.scan is not None and self.scan.mode != "off") or \
            (self.secrets is not None and self.secrets.mode != "off")
