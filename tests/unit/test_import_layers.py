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
