"""Values derived once per policy object (policy/derived.py)."""

from mcpgw.policy.derived import PerPolicy


class _Policy:  # any object: PerPolicy keys by identity, never by equality
    pass


def test_built_once_per_policy_and_by_identity():
    built = []
    derived = PerPolicy(lambda p: built.append(p) or len(built), keep=2)
    a, b = _Policy(), _Policy()
    assert [derived(a), derived(a), derived(b), derived(a), derived(b)] == [1, 1, 2, 1, 2]
    assert built == [a, b]


def test_only_the_latest_few_are_kept():
    built = []
    derived = PerPolicy(lambda p: built.append(p) or len(built), keep=2)
    a, b, c = _Policy(), _Policy(), _Policy()
    derived(a), derived(b), derived(c)  # a is dropped: the two most recent stay
    assert derived(c) == 3 and derived(b) == 2
    assert derived(a) == 4  # built again; c, now the least recently asked for, is dropped
    assert derived(b) == 2 and derived(c) == 5
    assert built == [a, b, c, a, c]
