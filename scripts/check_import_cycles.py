#!/usr/bin/env python3
"""Fail when src/repoforge has an import cycle, counting imports inside functions (which import-linter's
layers cannot see), or an import inside a function anywhere but the lazy loaders.

Why: imports moved into functions hide cycles instead of removing them; this reads every `import` with ast,
wherever it is, so a cycle cannot hide. Imports under `if TYPE_CHECKING:` are left out (they never run).
An optional or heavy package is imported inside a function only in one named loader of `LOADERS`
(repoforge/lazy.py; runtime/lazy.py for the code that runs inside servers); anything else goes to module level.
Usage: scripts/check_import_cycles.py [--inner]   (exit 1, with the cycles or stray imports on stderr)
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "repoforge"
#: The only modules whose functions import: each function there is one named loader of a package.
LOADERS = frozenset({"repoforge.lazy", "repoforge.runtime.lazy"})


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """Every import a module runs: (imported module or name candidates, line, inside a function)."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[tuple[list[str], int, bool]] = []
        self._depth = 0

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for n in node.orelse:
                self.visit(n)
            return
        self.generic_visit(node)

    def _function(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append(([alias.name], node.lineno, self._depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            if node.level > 1:
                base = base[: -(node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        # `from a import b` imports a.b when b is a module, else a
        for alias in node.names:
            self.found.append(([f"{mod}.{alias.name}", mod], node.lineno, self._depth > 0))


def build_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], int], list[tuple[str, int, str]]]:
    files = {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}
    graph: dict[str, set[str]] = {m: set() for m in files}
    lines: dict[tuple[str, str], int] = {}
    inner: list[tuple[str, int, str]] = []
    for mod, path in files.items():
        v = _Imports(mod, path.name == "__init__.py")
        v.visit(ast.parse(path.read_text(), str(path)))
        for candidates, line, in_function in v.found:
            target = next((c for c in candidates if c in files), None)
            top = candidates[-1].split(".")[0]
            if in_function:
                inner.append((mod, line, candidates[-1] if target is None else target))
            if target is None or target == mod:
                continue
            graph[mod].add(target)
            lines.setdefault((mod, target), line)
            # importing a.b.c runs a/__init__ and a/b/__init__ too
            parts = target.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent in files and parent != mod and not mod.startswith(parent + "."):
                    graph[mod].add(parent)
                    lines.setdefault((mod, parent), line)
            del top
    return graph, lines, inner


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a cycle to break."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inner", action="store_true", help="also list every import inside a function")
    args = ap.parse_args()
    graph, lines, inner = build_graph()
    found = cycles(graph)
    for comp in found:
        members = set(comp)
        print(f"import cycle among {len(comp)} modules:", file=sys.stderr)
        for m in comp:
            for t in sorted(graph[m] & members):
                print(f"  {m} -> {t}   (line {lines[(m, t)]})", file=sys.stderr)
    if args.inner:
        for mod, line, what in inner:
            print(f"{mod}:{line}: imports {what} inside a function")
    stray = [(mod, line, what) for mod, line, what in inner if mod not in LOADERS]
    for mod, line, what in stray:
        print(f"{mod}:{line}: imports {what} inside a function", file=sys.stderr)
    if stray:
        print(
            f"{len(stray)} import(s) inside functions outside the loaders ({', '.join(sorted(LOADERS))}): move each "
            "to module level, or, for an optional or heavy package, load it through a named loader there",
            file=sys.stderr,
        )
    if found:
        print(f"{len(found)} import cycle(s) in src/{PACKAGE}", file=sys.stderr)
    if found or stray:
        return 1
    print(
        f"no import cycle among {len(graph)} modules of src/{PACKAGE} (imports inside functions counted); "
        f"imports inside functions only in {', '.join(sorted(LOADERS))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
