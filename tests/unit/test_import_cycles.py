"""The package's modules import each other one way at top level (scripts/import_cycles.py): a
top-level cycle works or fails by which module happens to be imported first."""

from __future__ import annotations

from pathlib import Path

from scripts.import_cycles import components, edges
from tests.support.gateway import ROOT


def _top_level_cycles(root: Path) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for (src, dst), kind in edges(root).items():
        if kind == "top":
            graph.setdefault(src, set()).add(dst)
    return components(graph)


def test_the_gateway_has_no_top_level_import_cycle():
    assert _top_level_cycles(ROOT / "addons" / "mcpgw") == []


def test_cycles_are_found_at_top_level_and_in_functions(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from .sub import b\n")  # a module named by `from <package> import`
    (package / "sub" / "b.py").write_text("from ..c import NAME\n")  # a name: the edge is to its module
    (package / "c.py").write_text("import pkg.a\nNAME = 1\n")
    (package / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import e\n"
                                  "def f():\n    from . import e\n")
    (package / "e.py").write_text("from . import d\n")
    found = edges(package)
    assert found[("pkg.a", "pkg.sub.b")] == found[("pkg.sub.b", "pkg.c")] == found[("pkg.c", "pkg.a")] == "top"
    assert found[("pkg.d", "pkg.e")] == "function"  # the TYPE_CHECKING import never runs
    assert _top_level_cycles(package) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    assert sorted(components({s: {d} for (s, d) in found})) == [["pkg.a", "pkg.c", "pkg.sub.b"], ["pkg.d", "pkg.e"]]
