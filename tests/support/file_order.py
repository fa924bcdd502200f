"""Longest test files first, so that parallel workers finish together.

scripts/test deals whole files out to its workers (pytest-xdist's loadfile) in collection order;
a long file dealt out last runs alone at the end. `tests/file_durations.json` holds each file's
seconds from a full run; collection is sorted by it, longest first. A file it does not know yet
counts as a long one if it is end-to-end (outside tests/unit), so a new slow file starts early.
`MCPGW_TEST_DURATIONS=write` updates the table with the files a passing run measured."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

TABLE = Path(__file__).resolve().parents[1] / "file_durations.json"
UNKNOWN_END_TO_END = 60.0
UNKNOWN_UNIT = 1.0


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def _known() -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in json.loads(TABLE.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def sort_longest_first(items: list[pytest.Item]) -> None:
    known = _known()

    def seconds(item: pytest.Item) -> float:
        name = _file_of(item.nodeid)
        if name in known:
            return known[name]
        return UNKNOWN_UNIT if name.startswith("tests/unit/") else UNKNOWN_END_TO_END

    items.sort(key=seconds, reverse=True)  # stable: a file's tests keep their order


class DurationRecorder:
    """Sums each file's setup, call and teardown times as reports arrive (on xdist's controller too)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[_file_of(report.nodeid)] += report.duration

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if session.testsfailed or not self.seconds:
            return
        merged = {**_known(), **{name: round(value, 1) for name, value in self.seconds.items()}}
        table = dict(sorted(merged.items(), key=lambda kv: -kv[1]))
        TABLE.write_text(json.dumps(table, indent=1) + "\n")
