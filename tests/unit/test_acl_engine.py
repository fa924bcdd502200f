"""The ACL decision function: Kong ai-mcp-proxy's evaluation, exactly."""

import logging

import pytest
from pydantic import ValidationError

from mcpgw.governance import explain
from mcpgw.governance.acl import AclSettings, compile_acl, compiled, uri_pattern
from mcpgw.governance.engine import subjects_of, view
from mcpgw.identity.consumers import Identity
from mcpgw.policy.models import Policy

DEV = Identity("dev-user", id="c-dev", custom_id="okta|dev", groups=("developer",))
ADMIN = Identity("admin-user", id="c-admin", groups=("admin",))
EASON = Identity("eason")  # no groups

# The seed recipe's ACL (Kong's "Secure External MCP Gateway"), abbreviated.
RECIPE_ACL = {
    "consumer_identifier": "username",
    "include_consumer_groups": True,
    "default_acl": [{"deny": ["developer"], "scope": "tools"}],
    "tools": [
        {"name": "search_repositories", "acl": {"allow": ["admin", "developer"]}},
        {"name": "push_files", "acl": {"allow": ["admin"]}},
    ],
}


def policy(acl: dict | None, **route) -> Policy:
    return Policy.model_validate({
        "consumer_groups": ["admin", "developer", "suspended"],
        "consumers": {"dev-user": {"id": "c-dev", "custom_id": "okta|dev", "groups": ["developer"]},
                      "admin-user": {"id": "c-admin", "groups": ["admin"]}, "eason": {}},
        "services": {"gh": {"url": "http://127.0.0.1:1/mcp"}},
        "routes": {"gh": {"service": "gh", "paths": ["/gh"], **({"acl": acl} if acl is not None else {}), **route}},
    })


def allowed(acl: dict, who: Identity | None, name: str, primitive: str = "tool") -> bool:
    return explain(policy(acl), "gh", who, primitive, name).allowed


# Kong's table for one allow/deny pair: (allow, deny, caller's subjects -> allowed)
@pytest.mark.parametrize("allow, deny, expected", [
    (None, None, True),  # no lists: allow
    (["developer"], None, True),  # on the allow list
    (["admin"], None, False),  # an allow list exists, caller not on it
    ([], None, False),  # an empty allow list admits nobody
    (None, ["developer"], False),  # on the deny list
    (None, ["admin"], True),  # only a deny list, caller not on it
    (["developer"], ["developer"], False),  # deny wins over allow
    (["admin"], ["suspended"], False),  # both lists, on neither: not on the allow list
    (["dev-user"], ["developer"], False),  # deny by group beats allow by name
])
def test_kong_evaluation_table(allow, deny, expected):
    acl = {"include_consumer_groups": True, "tools": [{"name": "t", "acl": {"allow": allow, "deny": deny}}]}
    assert allowed(acl, DEV, "t") is expected


def test_seed_recipe_matrix():
    assert allowed(RECIPE_ACL, DEV, "search_repositories")
    assert not allowed(RECIPE_ACL, DEV, "push_files")
    assert not allowed(RECIPE_ACL, DEV, "delete_repository")  # unlisted: default_acl denies developers
    assert allowed(RECIPE_ACL, ADMIN, "push_files")
    assert allowed(RECIPE_ACL, ADMIN, "delete_repository")  # unlisted: admins are not on the deny list
    assert not allowed(RECIPE_ACL, EASON, "search_repositories")  # no group, not on the allow list
    assert allowed(RECIPE_ACL, EASON, "delete_repository")


def test_own_acl_replaces_default_instead_of_merging():
    acl = {"include_consumer_groups": True, "default_acl": [{"scope": "tools", "deny": ["developer"]}],
           "tools": [{"name": "t", "acl": {"deny": ["admin"]}}]}
    assert allowed(acl, DEV, "t")  # the default's deny of developers does not apply to t
    assert not allowed(acl, ADMIN, "t")
    assert not allowed(acl, DEV, "other")


def test_entry_without_acl_falls_under_default():
    # The past Kong bug: tools without their own ACL skipped default_acl.
    acl = {"include_consumer_groups": True, "default_acl": [{"scope": "tools", "deny": ["developer"]}],
           "tools": [{"name": "t", "description": "listed, but without an acl"}]}
    assert not allowed(acl, DEV, "t")
    decision = explain(policy(acl), "gh", DEV, "tool", "t")
    assert decision.rule == "acl.default_acl[0].deny" and decision.reason == "acl"


def test_default_acl_scope_defaults_to_tools_and_only_applies_to_its_scope():
    acl = {"include_consumer_groups": True, "default_acl": [{"deny": ["developer"]}]}
    assert not allowed(acl, DEV, "t")
    assert allowed(acl, DEV, "p", "prompt")
    assert allowed(acl, DEV, "repo://x", "resource")
    acl["default_acl"].append({"scope": "prompts", "allow": ["admin"]})
    assert not allowed(acl, DEV, "p", "prompt")
    assert allowed(acl, ADMIN, "p", "prompt")


@pytest.mark.parametrize("identifier, subject", [
    ("username", "dev-user"), ("consumer_id", "c-dev"), ("id", "c-dev"), ("custom_id", "okta|dev")])
def test_subjects_follow_consumer_identifier(identifier, subject):
    acl = {"consumer_identifier": identifier, "tools": [{"name": "t", "acl": {"allow": [subject]}}]}
    assert allowed(acl, DEV, "t")
    others = {"dev-user", "c-dev", "okta|dev"} - {subject}
    for other in others:  # the other fields of the same consumer do not match
        acl = {"consumer_identifier": identifier, "tools": [{"name": "t", "acl": {"allow": [other]}}]}
        assert not allowed(acl, DEV, "t")


def test_groups_match_only_with_include_consumer_groups():
    acl = {"tools": [{"name": "t", "acl": {"allow": ["developer"]}}, {"name": "u", "acl": {"deny": ["developer"]}}]}
    assert not allowed(acl, DEV, "t")
    assert allowed(acl, DEV, "u")  # the group is not a subject: the deny list does not match
    acl["include_consumer_groups"] = True
    assert allowed(acl, DEV, "t") and not allowed(acl, DEV, "u")


def test_subjects_of():
    acl = compile_acl(AclSettings(include_consumer_groups=True, consumer_identifier="custom_id"))
    assert subjects_of(DEV, acl) == {"okta|dev", "developer"}
    assert subjects_of(ADMIN, acl) == {"admin"}  # no custom_id: only its group
    assert subjects_of(None, acl) == frozenset()


def test_anonymous_caller_passes_only_acls_without_allow_list():
    acl = {"tools": [{"name": "open", "acl": {"deny": ["developer"]}}, {"name": "closed", "acl": {"allow": ["x"]}}]}
    assert allowed(acl, None, "open") and allowed(acl, None, "unlisted")
    assert not allowed(acl, None, "closed")


def test_prompts_by_name_and_resources_by_uri_and_pattern():
    acl = {"include_consumer_groups": True,
           "default_acl": [{"scope": "resources", "allow": ["admin"]}],
           "prompts": [{"name": "issue_triage", "acl": {"allow": ["developer"]}}],
           "resources": [{"uri": "repo://octocat/hello-world/LICENSE", "acl": {"deny": ["developer"]}},
                         {"uri": "repo://octocat/*", "acl": {"allow": ["developer"]}},
                         {"uri": "repo://*", "acl": {"deny": ["developer"]}}]}
    assert allowed(acl, DEV, "issue_triage", "prompt")
    assert not allowed(acl, ADMIN, "issue_triage", "prompt")
    assert allowed(acl, DEV, "repo://octocat/hello-world/README.md", "resource")  # first matching pattern
    assert not allowed(acl, DEV, "repo://octocat/hello-world/LICENSE", "resource")  # exact beats patterns
    assert not allowed(acl, DEV, "repo://other/x", "resource")
    assert not allowed(acl, DEV, "file:///etc/passwd", "resource")  # default: admins only
    assert allowed(acl, ADMIN, "file:///etc/passwd", "resource")


def test_uri_pattern_is_literal_but_for_star():
    rx = uri_pattern("repo://a/*.md")
    assert rx.match("repo://a/x/y.md") and rx.match("repo://a/.md")
    assert not rx.match("repo://a/x.mdx") and not rx.match("repo://ab/x.md")
    assert uri_pattern("repo://a?b").match("repo://a?b") and not uri_pattern("repo://a?b").match("repo://axb")


def test_rules_name_the_list_that_decided():
    p = policy(RECIPE_ACL)
    assert explain(p, "gh", DEV, "tool", "push_files").rule == "acl.tools[push_files].allow"
    assert explain(p, "gh", DEV, "tool", "list_commits").rule == "acl.default_acl[0].deny"
    assert explain(p, "gh", ADMIN, "tool", "list_commits").rule == "acl.default_acl[0].deny"
    assert explain(p, "gh", DEV, "prompt", "x").rule == "acl.default_acl(prompts): none"


def test_ungoverned_route_and_unknown_route():
    p = policy(None)
    d = explain(p, "gh", DEV, "tool", "push_files")
    assert d.allowed and d.reason == "no acl"
    with pytest.raises(KeyError):
        explain(p, "nope", DEV, "tool", "x")


def test_shadow_marks_would_be_denials():
    d = explain(policy({**RECIPE_ACL, "shadow": True}), "gh", DEV, "tool", "push_files")
    assert not d.allowed and d.shadow
    assert not explain(policy({**RECIPE_ACL, "shadow": True}), "gh", DEV, "tool", "search_repositories").shadow


def test_compiled_once_per_settings_object_and_views_per_subject_set():
    p = policy(RECIPE_ACL)
    settings = p.routes["gh"].acl
    acl = compiled(settings)
    assert compiled(settings) is acl
    # the same subjects (username and groups here) share one precomputed view
    assert view(acl, DEV) is view(acl, Identity("dev-user", groups=("developer",)))
    assert view(acl, DEV) is not view(acl, ADMIN)
    assert compiled(policy(RECIPE_ACL).routes["gh"].acl) is not acl  # a new policy version compiles anew


@pytest.mark.parametrize("bad, message", [
    ({"default_acl": [{"scope": "tools"}, {"scope": "tools", "deny": ["x"]}]}, "more than one entry for scope"),
    ({"tools": [{"name": "t"}, {"name": "t"}]}, "more than once"),
    ({"default_acl": [{"scope": "tool"}]}, "scope"),
    ({"tools": [{"name": "t", "acl": {"allow": [""]}}]}, "must not be empty"),
    ({"tools": [{"name": "t", "acl": {"alow": ["x"]}}]}, "Extra inputs"),
    ({"consumer_identifier": "email"}, "consumer_identifier"),
    ({"deny_response": "403"}, "deny_response"),
])
def test_settings_refuse_ambiguity_and_typos(bad, message):
    with pytest.raises(ValidationError, match=message):
        AclSettings.model_validate(bad)


def test_warns_when_group_names_cannot_match(caplog):
    p = policy({"default_acl": [{"deny": ["suspended"]}]})
    with caplog.at_level(logging.WARNING, logger="mcpgw.governance"):
        explain(p, "gh", DEV, "tool", "x")
    assert "suspended" in caplog.text and "include_consumer_groups" in caplog.text
