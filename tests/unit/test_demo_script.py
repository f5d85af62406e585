"""The README's first command runs examples/demo.py: its imports must follow the code when modules move
(the seam refactor moved make_server and check_models, and the demo broke without any test noticing)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"


def test_demo_script_imports_what_it_uses() -> None:
    spec = importlib.util.spec_from_file_location("repoforge_demo", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # top-level imports only; main() is not run
    assert callable(module.main)
