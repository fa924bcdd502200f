"""Which token rules apply to a caller: groups and consumers, as checked before a call and as
charged after it."""

from __future__ import annotations

from mcpgw.limits.settings import TokenRule
from mcpgw.limits.tokens import CompiledTokens


def compiled(**fields) -> CompiledTokens:
    rule = TokenRule(limit=[10], window_size=[60], **fields)
    return CompiledTokens(rule, 0, (), ())


def test_only_consumers_matches_username_id_or_custom_id():
    rule = compiled(only_consumers=["okta|42"])
    assert rule.applies((), ("alice", "c-1", "okta|42"))
    assert not rule.applies((), ("bob", "c-2"))
    assert not rule.applies((), ())  # anonymous
    assert rule.applies((), None)  # charging by name only: decided when the call began


def test_only_groups():
    rule = compiled(only_groups=["developer"])
    assert rule.applies(("developer", "x"), ("alice",)) and not rule.applies(("admin",), ("alice",))
