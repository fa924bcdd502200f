"""Which token rules apply to an LLM call (Kong 3.14's policies[].match: consumers, groups,
models, providers, paths, IPs, headers, all of them together) and whose counter it charges
(partition_by)."""

from __future__ import annotations

import pytest
from mitmproxy.http import Headers

from mcpgw.limits.settings import TokenRule
from mcpgw.limits.token_match import CallFacts, Matcher


def matcher(**fields) -> Matcher:
    return Matcher.of(TokenRule(limit=[10], window_size=[60], **fields))


def facts(**over) -> CallFacts:
    base = dict(consumer="alice", subjects=("alice", "c-1", "okta|42"), groups=("developer",), model="gpt-4o",
                provider="openai", ip="127.0.0.1", path="/chat/chat/completions", headers=Headers(x_team="blue"))
    return CallFacts(**{**base, **over})


def test_only_consumers_matches_username_id_or_custom_id():
    m = matcher(only_consumers=["okta|42"])
    assert m.applies(facts())
    assert not m.applies(facts(consumer="bob", subjects=("bob", "c-2")))
    assert not m.applies(facts(consumer=None, subjects=()))  # anonymous


def test_only_groups():
    m = matcher(only_groups=["developer"])
    assert m.applies(facts(groups=("developer", "x"))) and not m.applies(facts(groups=("admin",)))


def test_models_providers_paths():
    assert matcher(models=["gpt-4o"]).applies(facts()) and not matcher(models=["gpt-4o"]).applies(facts(model="o3"))
    assert not matcher(models=["gpt-4o"]).applies(facts(model=None))
    assert matcher(providers=["openai"]).applies(facts()) and not matcher(providers=["azure"]).applies(facts())
    assert matcher(paths=["/chat"]).applies(facts()) and matcher(paths=["/chat/"]).applies(facts())
    assert not matcher(paths=["/ch"]).applies(facts())  # a prefix ends at a path segment
    assert matcher(paths=["/chat/chat/completions"]).applies(facts())


def test_ips_and_networks():
    assert matcher(ips=["127.0.0.0/8"]).applies(facts()) and matcher(ips=["127.0.0.1"]).applies(facts())
    assert matcher(ips=["127.0.0.1"]).applies(facts(ip="::ffff:127.0.0.1"))  # IPv4 through a dual-stack socket
    assert not matcher(ips=["10.0.0.0/8"]).applies(facts()) and not matcher(ips=["::1"]).applies(facts())
    assert not matcher(ips=["127.0.0.1"]).applies(facts(ip=""))
    with pytest.raises(ValueError, match="not an IP address"):
        matcher(ips=["localhost"])


def test_headers_any_value_or_listed_values():
    assert matcher(headers={"X-Team": []}).applies(facts())
    assert matcher(headers={"x-team": ["blue", "red"]}).applies(facts())
    assert not matcher(headers={"x-team": ["red"]}).applies(facts())
    assert not matcher(headers={"x-other": []}).applies(facts())


def test_every_condition_must_hold():
    m = matcher(models=["gpt-4o"], only_consumers=["alice"], ips=["127.0.0.1"])
    assert m.applies(facts())
    assert not m.applies(facts(model="o3")) and not m.applies(facts(consumer="bob", subjects=("bob",)))


def test_partition_by_decides_whose_counter():
    per_consumer = matcher()  # the default: one counter per consumer, anonymous callers share one
    assert per_consumer.counter(facts()) != per_consumer.counter(facts(consumer="bob"))
    assert per_consumer.counter(facts()) == per_consumer.counter(facts(model="o3"))
    assert per_consumer.counter(facts(consumer=None)) == per_consumer.counter(facts(consumer=None, ip="10.0.0.9"))
    per_model = matcher(partition_by=["model"])
    assert per_model.counter(facts()) != per_model.counter(facts(model="o3"))
    assert per_model.counter(facts()) == per_model.counter(facts(consumer="bob"))  # everyone shares a model's budget
    shared = matcher(partition_by=[])
    assert shared.counter(facts()) == shared.counter(facts(consumer="bob", model="o3", ip="10.0.0.1"))
    both = matcher(partition_by=["consumer", "model"])
    keys = {both.counter(facts(consumer=c, model=m)) for c in ("alice", "bob") for m in ("gpt-4o", "o3")}
    assert len(keys) == 4
    by_header = matcher(headers={"x-team": []}, partition_by=["header"])
    assert by_header.counter(facts()) != by_header.counter(facts(headers=Headers(x_team="red")))
    by_group = matcher(only_groups=["developer", "admin"], partition_by=["consumer_group"])
    assert by_group.counter(facts(groups=("x", "admin"))) != by_group.counter(facts())
    assert "alice" not in per_consumer.counter(facts())  # a digest: no name in a Redis key


def test_partition_by_header_needs_headers():
    with pytest.raises(ValueError, match="partition_by header needs headers"):
        matcher(partition_by=["header"])
