"""The import graph of src/repoforge, imports inside functions counted, has no cycle (scripts/check_import_cycles.py;
lint-imports checks the layers in pyproject.toml)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_import_cycles.py"


def test_no_import_cycle_counting_imports_inside_functions() -> None:
    spec = importlib.util.spec_from_file_location("check_import_cycles", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    graph, _lines, _inner = mod.build_graph()
    assert "repoforge.targets" in graph and graph["repoforge.targets"]  # the graph was read
    assert mod.cycles(graph) == []


def test_imports_inside_functions_only_in_the_lazy_loaders() -> None:
    """An import inside a function anywhere else hides a dependency (or a cycle): it goes to module level, or, for
    an optional or heavy package, through a named loader in repoforge/lazy.py (runtime/lazy.py in the runtime)."""
    spec = importlib.util.spec_from_file_location("check_import_cycles", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _graph, _lines, inner = mod.build_graph()
    assert {m for m, _line, _what in inner} == mod.LOADERS  # the loaders were read
    assert [(m, line, what) for m, line, what in inner if m not in mod.LOADERS] == []
