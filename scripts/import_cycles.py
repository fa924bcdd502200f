"""Import cycles among the modules of a package, from their `ast` (no module is imported).

A module imports another at top level (runs when it is imported) or inside a function (runs when
called). A top-level cycle can fail on import order; a cycle with a function-level edge cannot
fail at import, but still ties the modules together. Reports the strongly connected components of
the top-level graph and of the full graph, and the edges of each cycle.

    python scripts/import_cycles.py [addons/mcpgw]"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(current: str, is_package: bool, level: int, target: str | None) -> str:
    base = current.split(".")
    if level:
        base = base[: len(base) - level + (1 if is_package else 0)]
        return ".".join([*base, *([target] if target else [])])
    return target or ""


def edges(root: Path) -> dict[tuple[str, str], str]:
    """(importer, imported) -> 'top' or 'function' (top wins), modules of `root` only."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    found: dict[tuple[str, str], str] = {}

    def add(src: str, dst: str, kind: str) -> None:
        while dst and dst not in modules:  # `from .a import b`: b may be a name in a, not a module
            dst = dst.rpartition(".")[0]
        if dst and dst != src and found.get((src, dst)) != "top":
            found[(src, dst)] = kind

    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"

        def visit(node: ast.AST, kind: str, type_checking: bool = False) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue  # never runs
                child_kind = "function" if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) else kind
                if isinstance(child, ast.Import):
                    for alias in child.names:
                        add(name, alias.name, kind)
                elif isinstance(child, ast.ImportFrom):
                    base = resolve(name, is_package, child.level, child.module)
                    for alias in child.names:
                        add(name, f"{base}.{alias.name}" if base else alias.name, kind)
                visit(child, child_kind)

        visit(tree, "top")
    return found


def components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10000)

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def report(found: dict[tuple[str, str], str], kinds: tuple[str, ...], title: str) -> int:
    graph: dict[str, set[str]] = {}
    for (src, dst), kind in found.items():
        if kind in kinds:
            graph.setdefault(src, set()).add(dst)
    groups = components(graph)
    print(f"{title}: {len(groups)} cycle(s)")
    for group in groups:
        members = set(group)
        print("  " + ", ".join(group))
        for (src, dst), kind in sorted(found.items()):
            if src in members and dst in members and kind in kinds:
                print(f"    {src} -> {dst} ({kind})")
    return len(groups)


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "addons/mcpgw").resolve()
    found = edges(root)
    top = report(found, ("top",), "top-level imports")
    report(found, ("top", "function"), "top-level and function-level imports")
    return 1 if top else 0


if __name__ == "__main__":
    sys.exit(main())
