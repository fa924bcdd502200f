"""The suite's file order (tests/support/file_order.py): longest files first by the table, an
unknown end-to-end file early, an unknown unit file late, and each file's tests kept together in
their own order."""

from __future__ import annotations

from dataclasses import dataclass

from tests.support import file_order


@dataclass
class Item:
    nodeid: str


def test_files_sort_longest_first_and_keep_their_tests_in_order(monkeypatch):
    monkeypatch.setattr(file_order, "_known", lambda: {"tests/test_slow.py": 90.0, "tests/test_quick.py": 5.0,
                                                      "tests/unit/test_big.py": 30.0})
    items = [Item(n) for n in ("tests/test_quick.py::a", "tests/test_quick.py::b", "tests/unit/test_new.py::x",
                               "tests/test_new_e2e.py::y", "tests/test_slow.py::c", "tests/test_slow.py::d",
                               "tests/unit/test_big.py::e")]
    file_order.sort_longest_first(items)
    assert [i.nodeid for i in items] == [
        "tests/test_slow.py::c", "tests/test_slow.py::d",  # 90 s
        "tests/test_new_e2e.py::y",  # unknown end-to-end: counted as a long one
        "tests/unit/test_big.py::e",  # 30 s
        "tests/test_quick.py::a", "tests/test_quick.py::b",  # 5 s
        "tests/unit/test_new.py::x",  # unknown unit file: last
    ]


def test_the_committed_table_names_files_that_exist():
    table = file_order._known()
    assert table, "tests/file_durations.json is missing or unreadable"
    root = file_order.TABLE.parent.parent
    missing = [name for name in table if not (root / name).is_file()]
    assert not missing, f"the table names files that are gone: {missing}"
